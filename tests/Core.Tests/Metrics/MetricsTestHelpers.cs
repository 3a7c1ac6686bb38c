using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;

namespace ProxyPlanes.Core.Tests.Metrics;

internal static class MetricsTestHelpers
{
    /// <summary>A meter with a unique name so parallel tests never see each other's instruments.</summary>
    public static Meter NewMeter() => new("ProxyPlanes.Tests." + Guid.NewGuid().ToString("N"));

    /// <summary>Metric name → TYPE from the <c># TYPE</c> lines.</summary>
    public static Dictionary<string, string> ParseTypes(string text)
    {
        var types = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string line in Lines(text))
        {
            if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
            {
                string[] parts = line.Split(' ');
                Assert.Equal(4, parts.Length);
                Assert.True(types.TryAdd(parts[2], parts[3]), $"duplicate TYPE for {parts[2]}");
            }
        }

        return types;
    }

    /// <summary>Value of the sample whose series (name plus rendered labels) is exactly <paramref name="series"/>.</summary>
    public static double Sample(string text, string series)
    {
        string prefix = series + " ";
        string[] matches = Lines(text).Where(l => l.StartsWith(prefix, StringComparison.Ordinal)).ToArray();
        Assert.True(matches.Length == 1, $"expected exactly one sample '{series}', found {matches.Length} in:\n{text}");
        string value = matches[0][prefix.Length..];
        return value switch
        {
            "+Inf" => double.PositiveInfinity,
            "-Inf" => double.NegativeInfinity,
            "NaN" => double.NaN,
            _ => double.Parse(value, NumberStyles.Float, CultureInfo.InvariantCulture),
        };
    }

    public static string[] Lines(string text) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries);

    /// <summary>Finds promtool on PATH (or /usr/bin); fails loudly when it is missing.</summary>
    public static string FindPromtool()
    {
        string? path = Environment.GetEnvironmentVariable("PATH");
        IEnumerable<string> dirs = (path ?? string.Empty).Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries).Append("/usr/bin");
        foreach (string dir in dirs)
        {
            string candidate = Path.Combine(dir, "promtool");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        Assert.Fail("promtool was not found on PATH or in /usr/bin. These tests validate the exposition format with the real " +
            "'promtool check metrics'; install it (Debian/Ubuntu: 'apt-get install prometheus') — CI must provide it.");
        throw new UnreachableException();
    }

    public sealed record PromtoolResult(int ExitCode, string StandardOutput, string StandardError);

    /// <summary>Runs <c>promtool check metrics</c> with <paramref name="exposition"/> on stdin.</summary>
    public static PromtoolResult RunPromtoolCheckMetrics(string exposition)
    {
        var startInfo = new ProcessStartInfo(FindPromtool())
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        startInfo.ArgumentList.Add("check");
        startInfo.ArgumentList.Add("metrics");

        using var process = Process.Start(startInfo) ?? throw new InvalidOperationException("could not start promtool");
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        process.StandardInput.Write(exposition);
        process.StandardInput.Close();
        if (!process.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            process.Kill();
            Assert.Fail("promtool check metrics did not finish within 60s");
        }

        return new PromtoolResult(process.ExitCode, stdout.GetAwaiter().GetResult(), stderr.GetAwaiter().GetResult());
    }
}
