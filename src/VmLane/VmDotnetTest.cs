using System.Globalization;
using System.Text;
using System.Xml.Linq;

namespace ProxyPlanes.VmLane;

/// <summary>The outcome of <see cref="VmLane.RunDotnetTestAsync"/>: the VM run (with <c>dotnet test</c>'s console output) and the TRX's counts.</summary>
/// <param name="Run">The VM run; its stdout is <c>dotnet test</c>'s console output.</param>
/// <param name="TrxPath">The TRX file on the host (under the results directory); null if none was written.</param>
/// <param name="Tests">Every test the TRX lists, with its outcome and what it wrote (ITestOutputHelper).</param>
public sealed record VmTestResult(VmRunResult Run, string? TrxPath, int Total, int Passed, int Failed, int NotExecuted, IReadOnlyList<string> FailedTests,
    IReadOnlyList<VmTestCase> Tests)
{
    /// <summary>The run finished, <c>dotnet test</c> exited 0, at least one test ran, and none failed.</summary>
    public bool Succeeded => Run.ExitCode == 0 && TrxPath is not null && Failed == 0 && Total > 0;

    public override string ToString() =>
        $"dotnet test in the VM: {Total} total, {Passed} passed, {Failed} failed, {NotExecuted} not executed (TRX: {TrxPath ?? "none"})"
        + (FailedTests.Count > 0 ? "\nfailed: " + string.Join(", ", FailedTests) : "") + "\n" + Run;
}

/// <summary>One test of a <see cref="VmTestResult"/>: its display name, outcome (Passed, Failed, NotExecuted) and its output.</summary>
public sealed record VmTestCase(string Name, string Outcome, string Output);

public static partial class VmLane
{
    /// <summary>Where the TRX lands, relative to the results directory.</summary>
    public const string TrxRelativePath = "TestResults/results.trx";

    /// <summary>
    /// Runs <c>dotnet test</c> on an already-built test assembly inside the VM, with an optional
    /// <c>--filter</c>, writing a TRX into <paramref name="resultsDirectory"/> on the host (it becomes
    /// the lane share: stdout, stderr, console.log and TestResults/results.trx stay there).
    /// The assembly must be on a host path the guest sees (anything but /proc, /sys, /dev, /run, /mnt/lane).
    /// </summary>
    public static async Task<VmTestResult> RunDotnetTestAsync(
        string testAssembly,
        string? filter,
        string resultsDirectory,
        TimeSpan timeout,
        VmLaneOptions? options = null,
        IEnumerable<string>? extraArguments = null,
        CancellationToken ct = default)
    {
        var assembly = Path.GetFullPath(testAssembly);
        if (!File.Exists(assembly)) throw new FileNotFoundException($"test assembly {assembly} not found: build it first", assembly);
        foreach (var hidden in new[] { "/proc/", "/sys/", "/dev/", "/run/", GuestLaneDirectory + "/" })
            if (assembly.StartsWith(hidden, StringComparison.Ordinal))
                throw new ArgumentException($"{assembly}: the guest mounts its own {hidden} and does not see the host's", nameof(testAssembly));

        var results = Path.GetFullPath(resultsDirectory);
        var trx = Path.Combine(results, TrxRelativePath);
        if (File.Exists(trx)) File.Delete(trx);

        var command = new StringBuilder("exec dotnet test ").Append(ShellQuote(assembly));
        if (!string.IsNullOrEmpty(filter)) command.Append(" --filter ").Append(ShellQuote(filter));
        command.Append(" --logger ").Append(ShellQuote("trx;LogFileName=" + Path.GetFileName(TrxRelativePath)))
            .Append(" --logger ").Append(ShellQuote("console;verbosity=normal"))
            .Append(" --results-directory ").Append(ShellQuote(GuestLaneDirectory + "/" + Path.GetDirectoryName(TrxRelativePath)));
        foreach (var arg in extraArguments ?? []) command.Append(' ').Append(ShellQuote(arg));

        var run = await RunAsync(
            command.ToString(),
            timeout,
            (options ?? VmLaneOptions.Default) with { LaneDirectory = results, WorkingDirectory = Path.GetDirectoryName(assembly)! },
            ct);
        return FromTrx(run, File.Exists(trx) ? trx : null);
    }

    private static VmTestResult FromTrx(VmRunResult run, string? trx)
    {
        if (trx is null) return new VmTestResult(run, null, 0, 0, 0, 0, [], []);
        var doc = XDocument.Load(trx);
        var ns = doc.Root?.Name.Namespace ?? XNamespace.None;
        var counters = doc.Descendants(ns + "Counters").FirstOrDefault();
        int Count(string name) =>
            int.TryParse((string?)counters?.Attribute(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n : 0;
        var tests = doc.Descendants(ns + "UnitTestResult")
            .Select(r => new VmTestCase((string?)r.Attribute("testName") ?? "?", (string?)r.Attribute("outcome") ?? "?",
                (string?)r.Element(ns + "Output")?.Element(ns + "StdOut") ?? ""))
            .ToList();
        var failed = tests.Where(t => t.Outcome == "Failed").Select(t => t.Name).ToList();
        return new VmTestResult(run, trx, Count("total"), Count("passed"), Count("failed"), Count("notExecuted"), failed, tests);
    }
}
