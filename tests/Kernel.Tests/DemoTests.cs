using System.Diagnostics;
using System.Text.RegularExpressions;
using ProxyPlanes.Sandbox;
using ProxyPlanes.Sandboxed;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>`proxyplanes-lab demo` works as the README says, and leaves nothing behind.</summary>
[Collection(KernelCollection.Name)]
public sealed partial class DemoTests
{
    [Theory]
    [InlineData("iptables")]
    [InlineData("nftables")]
    [InlineData("ebpf")]
    public async Task Demo_EachMode_ShowsSpreadRefusalAndScalingThenCleansUp(string mode)
    {
        var (exitCode, output, interrupted) = await RunDemoAsync(interruptWhen: null, mode);

        Assert.True(exitCode == 0, output);
        Assert.False(interrupted);
        AssertRow(@"client\s+10\.96\.0\.10:80 \(cluster IP\)\s+web-0\(\d+\) web-1\(\d+\) web-2\(\d+\)", output);
        AssertRow(@"client\s+203\.0\.113\.1:30080 \(node port\)\s+web-0\(\d+\) web-1\(\d+\) web-2\(\d+\)", output);
        // ebpf: requests from a process in the demo's cgroup, which only the socket hooks there send to a pod.
        AssertRow(@"node itself\s+10\.96\.0\.10:80 \(cluster IP\)\s+web-0\(\d+\) web-1\(\d+\) web-2\(\d+\)", output);
        AssertRow(@"\(no endpoints\)\s+Refused", output);
        AssertRow(@"10\.96\.0\.30:80 \(ClientIP affinity\)\s+web-\d\(15\)\s", output);
        AssertRow(@"203\.0\.113\.1:30081 \(node port, Local policy\)\s+web-0\(15\)\s+203\.0\.113\.10", output);
        AssertRow(@"10\.96\.0\.53:53/udp \(UDP\)\s+web-0\(\d+\) web-1\(\d+\)", output);
        AssertRow(@"scale down\s+1\s+\d+ ms\s+web-0\(\d+\)\s*\n", output);
        AssertRow(@"scale up\s+3\s+\d+ ms\s+web-0\(\d+\) web-1\(\d+\) web-2\(\d+\)", output);
        AssertNothingLeft(output);
        var ebpf = EbpfPlaceLine().Match(output);
        Assert.True(ebpf.Success == (mode == "ebpf"), output);
        if (ebpf.Success)
        {
            // Its own cgroup (never the root) and bpffs, both gone with the pins in them.
            var (cgroup, bpfFs) = (ebpf.Groups[1].Value, ebpf.Groups[2].Value);
            Assert.Equal(SandboxCgroup.Root, Path.GetDirectoryName(cgroup));
            Assert.False(Directory.Exists(cgroup), cgroup);
            Assert.False(Directory.Exists(bpfFs), bpfFs);
            Assert.DoesNotContain(File.ReadLines("/proc/self/mountinfo"), line => line.Contains(bpfFs, StringComparison.Ordinal));
        }
    }

    [Fact]
    public async Task Demo_InterruptedWhileRunning_RemovesEverythingItMade()
    {
        var (exitCode, output, interrupted) = await RunDemoAsync(interruptWhen: "healthy: the first sync");

        // The signal reached the demo while it ran, and the demo acted on it: it stopped early (130,
        // as a shell reports Ctrl+C) instead of finishing its steps, then removed what it made.
        Assert.True(interrupted, output);
        Assert.True(exitCode == 130, $"exit {exitCode}:\n{output}");
        Assert.Contains("Interrupted: removing the sandbox", output);
        Assert.DoesNotContain("Stopped the proxy with SIGTERM", output);
        AssertNothingLeft(output);
    }

    private static void AssertNothingLeft(string output)
    {
        var prefix = SandboxPrefix().Match(output).Groups[1].Value;
        Assert.False(string.IsNullOrEmpty(prefix), output);
        Assert.DoesNotContain(NetworkNamespace.ListNames(), name => name.StartsWith(prefix, StringComparison.Ordinal));
        Assert.DoesNotContain(Directory.GetDirectories(Path.GetTempPath()), d => Path.GetFileName(d).StartsWith("proxyplanes-demo-", StringComparison.Ordinal) && Directory.GetLastWriteTimeUtc(d) > DateTime.UtcNow.AddMinutes(-2));
    }

    [GeneratedRegex(@"namespaces (pp[0-9a-f]{5})-\*")]
    private static partial Regex SandboxPrefix();

    [GeneratedRegex(@"eBPF: socket hooks on the cgroup (\S+), pins in the bpffs (\S+)")]
    private static partial Regex EbpfPlaceLine();

    /// <summary>Runs the demo to its end; <c>Interrupted</c> is whether SIGINT was delivered to it (after <paramref name="interruptWhen"/> was printed).</summary>
    private static async Task<(int ExitCode, string Output, bool Interrupted)> RunDemoAsync(string? interruptWhen, string mode = "iptables")
    {
        var (file, prefix) = ProxyProcess.Executable(ProxyProcess.Lab);
        // Through env --default-signal=INT: a test host started as a background job (bash ignores SIGINT there, and the
        // child inherits SIG_IGN, which the .NET runtime keeps) would otherwise start a demo deaf to the interrupt.
        var start = new ProcessStartInfo("env") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in new[] { "--default-signal=INT", file }.Concat(prefix).Concat(["demo", $"--mode={mode}", "--requests=15"])) start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        var output = new System.Text.StringBuilder();
        bool signalled = false, interrupted = false;
        void OnLine(string? line)
        {
            if (line is null) return;
            lock (output)
            {
                output.AppendLine(line);
                if (interruptWhen is null || signalled || !line.Contains(interruptWhen, StringComparison.Ordinal)) return;
                signalled = true;
                interrupted = Signals.Send(process.Id, Signals.Interrupt); // false if the demo had already exited
            }
        }
        process.OutputDataReceived += (_, e) => OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => OnLine(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException("the demo did not finish within 3 minutes:\n" + output);
        }
        process.WaitForExit(); // drain the output readers
        lock (output) return (process.ExitCode, output.ToString(), interrupted);
    }

    /// <summary>Assert.Matches truncates the value; a demo row that does not match needs the whole output to be understood.</summary>
    private static void AssertRow([System.Diagnostics.CodeAnalysis.StringSyntax("Regex")] string pattern, string output) =>
        Assert.True(System.Text.RegularExpressions.Regex.IsMatch(output, pattern), $"no match for {pattern} in the demo's output:\n{output}");
}
