using System.Net;
using ProxyPlanes.Backends.Ipvs;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Config;

/// <summary>
/// A value read from a config file, with where it was: <see cref="Source"/> (<c>file:line: field</c>)
/// starts every message about it, so an operator finds the line to fix.
/// </summary>
public sealed record ConfigValue<T>(T Value, string File, int Line, string Field)
{
    public string Source => $"{File}:{Line}: {Field}";
}

/// <summary>
/// The part of a kube-proxy <c>KubeProxyConfiguration</c> (kubeproxy.config.k8s.io/v1alpha1) that
/// ProxyPlanes uses, as read by <see cref="KubeProxyConfigFile"/>. A null value is a field the file
/// leaves out, or leaves at kube-proxy's "use the default" value (<c>""</c>, <c>0s</c>, <c>null</c>):
/// the flag's value (given or default) applies then.
/// </summary>
public sealed record KubeProxyConfig
{
    public const string ApiVersion = "kubeproxy.config.k8s.io/v1alpha1";
    public const string Kind = "KubeProxyConfiguration";

    /// <summary>The file's path, as given to --config.</summary>
    public required string File { get; init; }

    /// <summary><c>mode</c>: a known mode name (whether this build has it is checked when binding).</summary>
    public ConfigValue<string>? Mode { get; init; }

    /// <summary><c>clusterCIDR</c>: comma-separated, at most one per family.</summary>
    public ConfigValue<EquatableArray<IpPrefix>>? ClusterCidrs { get; init; }

    public ConfigValue<string>? HostnameOverride { get; init; }

    /// <summary><c>metricsBindAddress</c>; a bare IP gets kube-proxy's port 10249.</summary>
    public ConfigValue<IPEndPoint>? MetricsBindAddress { get; init; }

    /// <summary><c>healthzBindAddress</c>; a bare IP gets kube-proxy's port 10256.</summary>
    public ConfigValue<IPEndPoint>? HealthzBindAddress { get; init; }

    /// <summary>The newer top-level <c>syncPeriod</c>: for every mode, unless the mode's section has its own.</summary>
    public ConfigValue<TimeSpan>? SyncPeriod { get; init; }

    /// <summary>The newer top-level <c>minSyncPeriod</c>.</summary>
    public ConfigValue<TimeSpan>? MinSyncPeriod { get; init; }

    /// <summary>The <c>iptables</c> section (also the source of <c>masqueradeAll</c> in ipvs mode, as in kube-proxy).</summary>
    public ModeSection Iptables { get; init; } = ModeSection.Empty;

    /// <summary>The <c>ipvs</c> section's periods (its scheduler is <see cref="IpvsScheduler"/>).</summary>
    public ModeSection Ipvs { get; init; } = ModeSection.Empty;

    /// <summary>The <c>nftables</c> section.</summary>
    public ModeSection Nftables { get; init; } = ModeSection.Empty;

    /// <summary><c>ipvs.scheduler</c>: one of <see cref="IpvsSchedulers.Known"/>; kept for the IPVS mode.</summary>
    public ConfigValue<string>? IpvsScheduler { get; init; }

    /// <summary><c>ipvs.excludeCIDRs</c>: virtual servers inside them are left alone by the IPVS mode.</summary>
    public ConfigValue<EquatableArray<IpPrefix>>? IpvsExcludeCidrs { get; init; }

    /// <summary><c>ipvs.strictARP</c>: raise net.ipv4.conf.all.arp_ignore/arp_announce to 1/2 in IPVS mode.</summary>
    public ConfigValue<bool>? IpvsStrictArp { get; init; }

    /// <summary><c>ipvs.tcpTimeout</c>: IPVS's established-TCP timeout; 0 (or absent) keeps the kernel's.</summary>
    public ConfigValue<TimeSpan>? IpvsTcpTimeout { get; init; }

    /// <summary><c>ipvs.tcpFinTimeout</c>: IPVS's TCP timeout after a FIN; 0 keeps the kernel's.</summary>
    public ConfigValue<TimeSpan>? IpvsTcpFinTimeout { get; init; }

    /// <summary><c>ipvs.udpTimeout</c>: IPVS's UDP timeout; 0 keeps the kernel's.</summary>
    public ConfigValue<TimeSpan>? IpvsUdpTimeout { get; init; }

    /// <summary><c>nodePortAddresses</c>: CIDRs, or <c>[primary]</c> alone.</summary>
    public ConfigValue<NodePortAddressSetting>? NodePortAddresses { get; init; }

    public ConfigValue<LocalDetectMode>? DetectLocalMode { get; init; }

    /// <summary><c>detectLocal.interfaceNamePrefix</c>.</summary>
    public ConfigValue<string>? InterfaceNamePrefix { get; init; }

    /// <summary><c>detectLocal.bridgeInterface</c>.</summary>
    public ConfigValue<string>? BridgeInterface { get; init; }

    /// <summary>The <c>conntrack</c> section with kube-proxy's defaults for what it leaves out.</summary>
    public ConntrackSettings Conntrack { get; init; } = ConntrackSettings.KubeProxyDefaults;

    /// <summary><c>clientConnection.kubeconfig</c>, kept for the Kubernetes API source (and its --kubeconfig flag, which will override it).</summary>
    public ConfigValue<string>? Kubeconfig { get; init; }

    /// <summary>
    /// kube-proxy fields this build does not act on that the file sets to something other than
    /// empty/zero/false (e.g. <c>bindAddress</c>, <c>clientConnection.qps</c>), by dotted name, so they can be reported.
    /// </summary>
    public EquatableArray<string> IgnoredFields { get; init; } = EquatableArray<string>.Empty;

    /// <summary>
    /// The section kube-proxy reads for <paramref name="mode"/>'s periods: <c>iptables</c>, <c>ipvs</c> or
    /// <c>nftables</c> (none for other modes, which only have the top-level fields).
    /// </summary>
    public ModeSection SectionFor(string mode) => mode switch
    {
        "iptables" => Iptables,
        "ipvs" => Ipvs,
        "nftables" => Nftables,
        _ => ModeSection.Empty,
    };

    /// <summary>The sync period for <paramref name="mode"/>: its section's, else the top-level one.</summary>
    public ConfigValue<TimeSpan>? SyncPeriodFor(string mode) => SectionFor(mode).SyncPeriod ?? SyncPeriod;

    public ConfigValue<TimeSpan>? MinSyncPeriodFor(string mode) => SectionFor(mode).MinSyncPeriod ?? MinSyncPeriod;

    /// <summary><c>nftables.masqueradeAll</c> in nftables mode, <c>iptables.masqueradeAll</c> otherwise (kube-proxy's ipvs mode reads it too).</summary>
    public ConfigValue<bool>? MasqueradeAllFor(string mode) => mode == "nftables" ? Nftables.MasqueradeAll : Iptables.MasqueradeAll;
}

/// <summary>A mode's section of the config file (<c>iptables</c>, <c>ipvs</c>, <c>nftables</c>); null fields are left to the default.</summary>
public sealed record ModeSection(ConfigValue<TimeSpan>? SyncPeriod, ConfigValue<TimeSpan>? MinSyncPeriod, ConfigValue<bool>? MasqueradeAll)
{
    public static ModeSection Empty { get; } = new(null, null, null);
}

/// <summary>
/// kube-proxy's <c>conntrack</c> settings, carried in <see cref="RunSettings.Conntrack"/> and written
/// to the node's sysctls at start (<c>NodeTools.Conntrack.ConntrackSysctls</c>). Defaults are
/// kube-proxy's; as in kube-proxy, 0 means "leave the node's value alone".
/// </summary>
public sealed record ConntrackSettings
{
    public static ConntrackSettings KubeProxyDefaults { get; } = new();

    /// <summary><c>maxPerCore</c>: nf_conntrack_max is max(this × CPUs, <see cref="Min"/>); 0 leaves it alone.</summary>
    public int MaxPerCore { get; init; } = 32768;

    /// <summary><c>min</c>: the floor of nf_conntrack_max.</summary>
    public int Min { get; init; } = 131072;

    /// <summary><c>tcpEstablishedTimeout</c> (nf_conntrack_tcp_timeout_established); 0 leaves it alone.</summary>
    public TimeSpan TcpEstablishedTimeout { get; init; } = TimeSpan.FromHours(24);

    /// <summary><c>tcpCloseWaitTimeout</c> (nf_conntrack_tcp_timeout_close_wait); 0 leaves it alone.</summary>
    public TimeSpan TcpCloseWaitTimeout { get; init; } = TimeSpan.FromHours(1);

    /// <summary><c>udpTimeout</c> (nf_conntrack_udp_timeout); 0 (the default) leaves it alone.</summary>
    public TimeSpan UdpTimeout { get; init; }

    /// <summary><c>udpStreamTimeout</c> (nf_conntrack_udp_timeout_stream); 0 (the default) leaves it alone.</summary>
    public TimeSpan UdpStreamTimeout { get; init; }

    /// <summary><c>tcpBeLiberal</c> (nf_conntrack_tcp_be_liberal = 1); false (the default) leaves it alone.</summary>
    public bool TcpBeLiberal { get; init; }

    /// <summary>What to write: kube-proxy's rules (nf_conntrack_max = max(maxPerCore × CPUs, min), 0 leaves a value alone).</summary>
    public NodeTools.Conntrack.ConntrackSysctlPlan Plan(int cpus) => new(
        MaxPerCore > 0 ? Math.Max((long)MaxPerCore * cpus, Min) : 0,
        TcpEstablishedTimeout, TcpCloseWaitTimeout, TcpBeLiberal, UdpTimeout, UdpStreamTimeout);

    public override string ToString() =>
        $"maxPerCore={MaxPerCore} min={Min} tcpEstablished={GoDuration.Format(TcpEstablishedTimeout)} tcpCloseWait={GoDuration.Format(TcpCloseWaitTimeout)} udp={GoDuration.Format(UdpTimeout)} udpStream={GoDuration.Format(UdpStreamTimeout)} tcpBeLiberal={TcpBeLiberal}";
}

/// <summary>A config file that cannot be used; the message starts with <c>file:line:</c> (or <c>file:</c>).</summary>
public sealed class ConfigFileException(string file, int line, string detail) : Exception(line > 0 ? $"{file}:{line}: {detail}" : $"{file}: {detail}")
{
    public string File { get; } = file;

    /// <summary>1-based; 0 when the problem concerns the whole file.</summary>
    public int Line { get; } = line;

    /// <summary>The message without the place.</summary>
    public string Detail { get; } = detail;
}
