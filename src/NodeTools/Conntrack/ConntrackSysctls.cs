using Microsoft.Extensions.Logging;

namespace ProxyPlanes.NodeTools.Conntrack;

/// <summary>
/// What kube-proxy's <c>conntrack</c> settings ask of the node's sysctls. 0 (or false) leaves a value alone.
/// </summary>
/// <param name="Max">nf_conntrack_max to raise to (never lowered, as kube-proxy); 0: leave it.</param>
public sealed record ConntrackSysctlPlan(
    long Max, TimeSpan TcpEstablishedTimeout, TimeSpan TcpCloseWaitTimeout, bool TcpBeLiberal, TimeSpan UdpTimeout, TimeSpan UdpStreamTimeout);

/// <summary>
/// Writes <see cref="ConntrackSysctlPlan"/> to <c>/proc/sys/net/netfilter</c> at start, as kube-proxy does
/// (cmd/kube-proxy/app/conntrack.go). The timeouts and tcp_be_liberal are per network namespace;
/// nf_conntrack_max is global and writable only from the node's own namespace (read-only in a child, as in
/// a test sandbox), and the hash table is grown with it (<c>/sys/module/nf_conntrack/parameters/hashsize</c>
/// to max/4) only once the max was written. A setting that cannot be written gets one warning naming it
/// and why; the proxy runs on with the node's value, as it would without the setting.
/// </summary>
public sealed class ConntrackSysctls(ILogger logger, string procSys = "/proc/sys", string hashSizeFile = "/sys/module/nf_conntrack/parameters/hashsize")
{
    private readonly Sysctls _sysctls = new(logger, procSys);

    /// <summary>Applies <paramref name="plan"/>; returns the settings that could not be applied (each was logged once).</summary>
    public IReadOnlyList<string> Apply(ConntrackSysctlPlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var failed = new List<string>();
        if (plan.Max > 0) RaiseMax(plan.Max, failed);
        Set("conntrack.tcpEstablishedTimeout", "nf_conntrack_tcp_timeout_established", plan.TcpEstablishedTimeout, failed);
        Set("conntrack.tcpCloseWaitTimeout", "nf_conntrack_tcp_timeout_close_wait", plan.TcpCloseWaitTimeout, failed);
        if (plan.TcpBeLiberal) _sysctls.Set("conntrack.tcpBeLiberal", "net/netfilter/nf_conntrack_tcp_be_liberal", 1, failed);
        Set("conntrack.udpTimeout", "nf_conntrack_udp_timeout", plan.UdpTimeout, failed);
        Set("conntrack.udpStreamTimeout", "nf_conntrack_udp_timeout_stream", plan.UdpStreamTimeout, failed);
        return failed;
    }

    private void Set(string setting, string sysctl, TimeSpan timeout, List<string> failed)
    {
        if (timeout <= TimeSpan.Zero) return;
        _sysctls.Set(setting, "net/netfilter/" + sysctl, (long)timeout.TotalSeconds, failed);
    }

    private void RaiseMax(long max, List<string> failed)
    {
        const string name = "net/netfilter/nf_conntrack_max";
        if (_sysctls.Read(name) is { } current && current >= max)
        {
            logger.LogDebug("net.netfilter.nf_conntrack_max is {Current}, at least the {Max} conntrack.maxPerCore/min ask for", current, max);
            return;
        }
        if (!_sysctls.Set("conntrack.maxPerCore/min", name, max, failed)) return;
        // kube-proxy's rule: the hash table gets max/4 buckets, so lookups stay short as the table fills.
        if (_sysctls.Read(hashSizeFile) is { } buckets && buckets < max / 4) _sysctls.Set("conntrack.maxPerCore/min (hashsize)", hashSizeFile, max / 4, failed);
    }
}
