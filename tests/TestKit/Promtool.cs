using ProxyPlanes.NodeTools;

namespace ProxyPlanes.TestKit;

/// <summary>What `promtool check metrics` said about an exposition.</summary>
public sealed record PromtoolReport(int ExitCode, string StandardOutput, string StandardError)
{
    /// <summary>Every line promtool printed.</summary>
    public IReadOnlyList<string> Complaints { get; } =
        (StandardOutput + "\n" + StandardError).Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    /// <summary>Complaints other than the known kube-proxy naming lints.</summary>
    public IReadOnlyList<string> Unexpected => Complaints.Where(c => !Promtool.KnownLints.Contains(c)).ToList();

    /// <summary>Valid exposition whose only lints are the known ones (promtool exits 3 for lints).</summary>
    public bool AcceptedApartFromKnownLints => Unexpected.Count == 0 && (ExitCode == 0 || (ExitCode == 3 && Complaints.Count > 0));

    public override string ToString() => $"promtool exit {ExitCode}\nstdout:\n{StandardOutput}\nstderr:\n{StandardError}";
}

/// <summary>Runs the real `promtool check metrics` (Debian package prometheus) on an exposition.</summary>
public static class Promtool
{
    /// <summary>
    /// kube-proxy names two gauges with a _total suffix; dashboards depend on the names, so these
    /// lints are expected, and the only ones allowed.
    /// </summary>
    public static readonly IReadOnlySet<string> KnownLints = new HashSet<string>(StringComparer.Ordinal)
    {
        "kubeproxy_sync_proxy_rules_iptables_total non-counter metrics should not have \"_total\" suffix",
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total non-counter metrics should not have \"_total\" suffix",
    };

    public static async Task<PromtoolReport> CheckMetricsAsync(string exposition)
    {
        var promtool = new[] { "/usr/bin/promtool", "/usr/local/bin/promtool" }.FirstOrDefault(File.Exists)
            ?? throw new InvalidOperationException("promtool is missing: apt-get install prometheus (scripts/setup.sh installs it)");
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var result = await ExternalCommand.RunAsync(promtool, ["check", "metrics"], exposition, timeout.Token);
        return new PromtoolReport(result.ExitCode, result.StandardOutput, result.StandardError);
    }
}
