using Microsoft.Extensions.Logging;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;

namespace ProxyPlanes.DataPlane;

/// <summary>
/// A data plane's description of its <c>--mode</c>, written once in the data plane's own assembly:
/// its name, whether this node's kernel can run it, how the daemon creates it, how its state is
/// removed, and what the benchmark measures of it. The daemon, <c>proxyplanes cleanup</c>, the demo
/// and the benchmark find modes in a <see cref="ProxyModeRegistry"/> and never name one in code.
/// </summary>
public interface IProxyMode
{
    /// <summary>The <c>--mode</c> name; the same as the backend's <see cref="IProxyBackend.Mode"/>.</summary>
    string Name { get; }

    /// <summary>
    /// Null when this node's kernel can run the mode; otherwise the one line the user sees (it names
    /// the mode and what to do instead). May load a kernel module, as kube-proxy does.
    /// </summary>
    Task<string?> KernelProblemAsync(CancellationToken cancellationToken);

    /// <summary>The data plane the daemon runs, on this node's tools and kernel, with its benchmark probe.</summary>
    Task<ProxyModeBackend> CreateAsync(ProxyModeOptions options, ProxyMetrics metrics, ILogger logger, CancellationToken cancellationToken);

    /// <summary>
    /// Removes everything the mode may have installed on this node (both IP families, every tool
    /// flavour), whether or not it is running: <c>proxyplanes cleanup</c>, and starting another mode.
    /// Works on a kernel that cannot run the mode.
    /// </summary>
    Task CleanupAsync(ProxyMetrics metrics, ILogger logger, CancellationToken cancellationToken) =>
        CleanupAsync(metrics, logger, CleanupScope.Everything, cancellationToken);

    /// <summary>
    /// Removes what this mode left, except what <paramref name="scope"/> leaves alone: on a node that now
    /// runs <see cref="CleanupScope.Running"/>, never an object the running mode owns, even one with the
    /// same name (the iptables and IPVS modes both program KUBE-SERVICES, KUBE-POSTROUTING, KUBE-MARK-MASQ);
    /// never an IPVS virtual server inside <see cref="CleanupScope.IpvsExcludeCidrs"/> (someone else's).
    /// </summary>
    Task CleanupAsync(ProxyMetrics metrics, ILogger logger, CleanupScope scope, CancellationToken cancellationToken);

    /// <summary>Whether this mode programs the iptables chain <paramref name="chain"/> of <paramref name="table"/> (false for a mode without iptables).</summary>
    bool OwnsIptablesChain(string table, string chain) => false;

    /// <summary>Reads what this mode put in the kernel for <c>proxyplanes explain</c>; null when the mode has no explainer yet.</summary>
    IKernelExplainer? Explainer => null;
}

/// <summary>What a cleanup must leave alone.</summary>
/// <param name="Running">The mode that runs on the node (its objects stay); null when none runs.</param>
public sealed record CleanupScope(IProxyMode? Running = null)
{
    /// <summary>Nothing runs and nothing is excluded: <c>proxyplanes cleanup</c> without settings.</summary>
    public static CleanupScope Everything { get; } = new();

    /// <summary><c>ipvs.excludeCIDRs</c> / <c>--ipvs-exclude-cidrs</c>: IPVS virtual servers in them are not ours to delete.</summary>
    public EquatableArray<IpPrefix> IpvsExcludeCidrs { get; init; } = EquatableArray<IpPrefix>.Empty;

    /// <summary><c>--bpf-fs</c>: the bpf filesystem whose <c>proxyplanes</c> folder the eBPF mode's pins are in; null for /sys/fs/bpf.</summary>
    public string? BpfFs { get; init; }
}

/// <summary>The daemon's settings a mode may use when it is created; each mode reads its own and ignores the rest.</summary>
public sealed record ProxyModeOptions
{
    /// <summary><c>--iptables-variant</c>: auto (detect what the node uses), nft or legacy.</summary>
    public string IptablesVariant { get; init; } = "auto";

    /// <summary><c>--ipvs-scheduler</c> / <c>ipvs.scheduler</c>; null for the IPVS mode's default (rr).</summary>
    public string? IpvsScheduler { get; init; }

    /// <summary><c>--ipvs-exclude-cidrs</c> / <c>ipvs.excludeCIDRs</c>: virtual servers in them are never deleted by the IPVS mode.</summary>
    public EquatableArray<IpPrefix> IpvsExcludeCidrs { get; init; } = EquatableArray<IpPrefix>.Empty;

    /// <summary><c>--ipvs-strict-arp</c> / <c>ipvs.strictARP</c>: raise net.ipv4.conf.all.arp_ignore to 1 and arp_announce to 2.</summary>
    public bool IpvsStrictArp { get; init; }

    /// <summary><c>ipvs.tcpTimeout</c>, <c>tcpFinTimeout</c>, <c>udpTimeout</c> (and their flags); 0 leaves the kernel's.</summary>
    public IpvsTimeoutSettings IpvsTimeouts { get; init; } = IpvsTimeoutSettings.KeepTheKernels;

    /// <summary><c>--bpf-fs</c>: where the eBPF mode pins its maps and links (in a <c>proxyplanes</c> folder); null for /sys/fs/bpf.</summary>
    public string? BpfFs { get; init; }

    /// <summary><c>--bpf-cgroup</c>: the cgroup v2 directory the eBPF mode's socket hooks attach to; null for the host's cgroup v2 root.</summary>
    public string? BpfCgroup { get; init; }
}

/// <summary>kube-proxy's IPVS connection timeouts (<c>ipvsadm --set</c>); a zero keeps the kernel's value.</summary>
public sealed record IpvsTimeoutSettings(TimeSpan Tcp, TimeSpan TcpFin, TimeSpan Udp)
{
    public static IpvsTimeoutSettings KeepTheKernels { get; } = new(TimeSpan.Zero, TimeSpan.Zero, TimeSpan.Zero);
}

/// <summary>A created data plane and the probe that looks at what it put in the kernel, bound to it.</summary>
public sealed record ProxyModeBackend(IProxyBackend Backend, IKernelProbe Probe);

/// <summary>What the benchmark measures of a mode beyond the shared path (sync latency, churn, memory).</summary>
public interface IKernelProbe
{
    /// <summary>Rules, chains, map elements, virtual servers: whatever the mode puts in the kernel, by kind.</summary>
    Task<IReadOnlyDictionary<string, long>> CountKernelObjectsAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Time for the kernel tool alone to load what the cold sync just sent (null when not measurable).
    /// Called right after the cold sync; afterwards the kernel holds the same state again.
    /// </summary>
    Task<TimeSpan?> FloorAsync(CancellationToken cancellationToken);

    /// <summary>
    /// The smallest change the mode's kernel interface can make at the size the kernel holds now, each step timed
    /// alone: one rule or element added to a scratch object of the mode's own, then removed (two samples). The part
    /// of a single change no proxy can avoid in this mode (the per-change floor); null when not measurable. Leaves
    /// the kernel as it found it.
    /// </summary>
    Task<IReadOnlyList<TimeSpan>?> ChangeFloorAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Every IPv4 endpoint (<c>address:port</c>) the mode's kernel objects forward to, read back from
    /// the kernel: the soak checks that every change reached it.
    /// </summary>
    Task<IReadOnlySet<string>> EndpointsInKernelAsync(CancellationToken cancellationToken);
}

/// <summary>
/// Every mode one build knows: the modes built in (an <see cref="IProxyMode"/> each) and the modes
/// named but not built yet. A name that is not built is accepted as a mode name (by the flags and the
/// config file) and answered with one line saying it is not built, as kube-proxy users would expect
/// of a mode they read about; it has no descriptor, so nothing can create or clean it.
/// </summary>
public sealed class ProxyModeRegistry
{
    private readonly Dictionary<string, IProxyMode> _built;

    public ProxyModeRegistry(IEnumerable<IProxyMode> built, IEnumerable<string> notBuilt)
    {
        Built = built.ToArray();
        NotBuilt = notBuilt.ToArray();
        _built = Built.ToDictionary(m => m.Name, StringComparer.Ordinal);
        Known = [.. Built.Select(m => m.Name), .. NotBuilt];
        if (Known.Distinct(StringComparer.Ordinal).Count() != Known.Count)
            throw new ArgumentException($"a mode is named twice: {string.Join(", ", Known)}");
    }

    /// <summary>The modes this build has, in the order they are listed to the user.</summary>
    public IReadOnlyList<IProxyMode> Built { get; }

    /// <summary>Names of modes known but not built yet (ebpf).</summary>
    public IReadOnlyList<string> NotBuilt { get; }

    /// <summary>Every mode name: the built ones, then the ones not built yet.</summary>
    public IReadOnlyList<string> Known { get; }

    public IReadOnlyList<string> BuiltNames => [.. Built.Select(m => m.Name)];

    /// <summary>The built mode named <paramref name="name"/>, or null (unknown or not built: see <see cref="Problem"/>).</summary>
    public IProxyMode? Find(string name) => _built.GetValueOrDefault(name);

    /// <summary>
    /// Null when <paramref name="mode"/> is built; otherwise the one-line reason, naming where the
    /// mode came from: the <c>--mode</c> flag, or <paramref name="source"/> (<c>file:line: mode</c> of a config file).
    /// </summary>
    public string? Problem(string mode, string? source = null)
    {
        if (_built.ContainsKey(mode)) return null;
        if (!Known.Contains(mode)) return $"{source ?? "--mode"}: '{mode}' is not a mode; use one of {string.Join(", ", Known)}";
        return $"{(source is null ? $"--mode={mode}" : $"{source}: {mode}")} is not built yet; this build has {string.Join(", ", BuiltNames)}";
    }
}
