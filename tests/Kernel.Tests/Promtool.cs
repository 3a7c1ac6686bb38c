using ProxyPlanes.Core.Util;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>Runs the real `promtool check metrics` (Debian package prometheus) on a scrape.</summary>
public static class Promtool
{
    /// <summary>
    /// kube-proxy names two gauges with a _total suffix; dashboards depend on the names, so this
    /// lint is expected and the only one allowed.
    /// </summary>
    public static readonly string[] KnownLints =
    [
        "kubeproxy_sync_proxy_rules_iptables_total non-counter metrics should not have \"_total\" suffix",
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total non-counter metrics should not have \"_total\" suffix",
    ];

    public static async Task<(int ExitCode, IReadOnlyList<string> Problems)> CheckMetricsAsync(string scrape)
    {
        if (!File.Exists("/usr/bin/promtool")) throw new InvalidOperationException("promtool is missing: apt-get install prometheus (the test scripts install it)");
        var result = await ExternalCommand.RunAsync("/usr/bin/promtool", ["check", "metrics"], scrape);
        var problems = (result.StandardOutput + "\n" + result.StandardError)
            .Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(line => !KnownLints.Contains(line)).ToList();
        if (result.ExitCode is not (0 or 3)) problems.Add($"promtool exited with {result.ExitCode}");
        return (result.ExitCode, problems);
    }
}
