using System.Buffers;
using System.Collections.Immutable;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using ProxyPlanes.Model;
using ProxyPlanes.Netlink;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>What <see cref="EbpfBackend"/> needs of the kernel: read the maps, write one element, check the pins.</summary>
public interface IEbpfMaps
{
    /// <summary>Every element of the services and backends maps (a full sync diffs against them).</summary>
    EbpfMapContents Read();

    /// <summary>One write of a plan; a refusal throws a <see cref="BpfException"/>.</summary>
    void Write(MapWrite write);

    /// <summary>
    /// A run of a plan's writes, in order; returns how many were written, and in <paramref name="refused"/> the
    /// kernel's refusal of the one after them (null when all were). One at a time by default.
    /// </summary>
    int Write(ReadOnlySpan<MapWrite> writes, out BpfException? refused) => OneByOne(this, writes, out refused);

    /// <summary><see cref="Write(MapWrite)"/> for each, stopping at the first refusal.</summary>
    internal static int OneByOne(IEbpfMaps maps, ReadOnlySpan<MapWrite> writes, out BpfException? refused)
    {
        ArgumentNullException.ThrowIfNull(maps);
        refused = null;
        for (var i = 0; i < writes.Length; i++)
        {
            try
            {
                maps.Write(writes[i]);
            }
            catch (BpfException e)
            {
                refused = e;
                return i;
            }
        }
        return writes.Length;
    }

    /// <summary>The pins and links are still in place (the canary of a periodic sync).</summary>
    bool Intact();

    /// <summary>
    /// Node-level state a full sync re-checks: the tc programs on every node interface (a new one gets
    /// them, a gone one loses its pins) and the node addresses node ports are served on. Nothing by default.
    /// </summary>
    void SyncNode(NodeNetwork network)
    {
    }

    /// <summary>
    /// Deletes the tc programs' connection entries the deletions match (<see cref="StaleConnections"/>) and returns
    /// how many; a refusal throws a <see cref="BpfException"/>. Nothing by default (no tc programs).
    /// </summary>
    int DeleteConnections(IReadOnlyList<NodeTools.Conntrack.ConntrackDeletion> deletions) => 0;

    /// <summary>
    /// The tc programs' connection maps hold an entry (<see cref="DeleteConnections"/> could delete something). True by
    /// default: the backend then plans the stale flows as always; false lets a first sync skip planning them.
    /// </summary>
    bool HoldsConnections() => true;

    /// <summary>
    /// Destroys the connected UDP sockets the deletions name and the sockets a Drop verdict left on a frontend of
    /// <paramref name="reopened"/> (<see cref="SocketDestroyer"/>) and returns how many; a refusal throws a
    /// <see cref="BpfException"/>. Nothing by default, and nothing on a kernel without bpf_sock_destroy.
    /// </summary>
    int DestroySockets(IReadOnlyList<NodeTools.Conntrack.ConntrackDeletion> deletions, IReadOnlyList<ServiceKey>? reopened = null) => 0;
}

/// <summary>Where the eBPF data plane keeps its pins, and which cgroup its socket hooks attach to.</summary>
/// <param name="BpfFs"><c>--bpf-fs</c>: a bpf filesystem (mounted there when it is not one); the pins live in its <c>proxyplanes</c> folder.</param>
/// <param name="Cgroup"><c>--bpf-cgroup</c>: the cgroup v2 directory whose processes (and the node's, when it is the root) get the socket hooks.</param>
public sealed record EbpfLocation(string BpfFs, string Cgroup)
{
    public const string DefaultBpfFs = "/sys/fs/bpf";
    public const string PinFolder = "proxyplanes";

    public string PinDirectory => Path.Combine(BpfFs, PinFolder);

    /// <summary>The pin of the link attaching <paramref name="program"/>.</summary>
    public static string LinkPin(string pinDirectory, string program) => Path.Combine(pinDirectory, "link_" + program);

    /// <summary>The host's cgroup v2 mount (from /proc/self/mountinfo), or null without one: /sys/fs/cgroup/unified on a hybrid host.</summary>
    public static string? HostCgroup2Root() => Mounts.Cgroup2Root();

    /// <summary>Whether <paramref name="directory"/> is the mount point of a bpf filesystem.</summary>
    public static bool IsBpfFs(string directory) => Mounts.IsBpfFs(directory);

    /// <summary>(mount point, file system type) of every mount this process sees.</summary>
    public static IEnumerable<(string Path, string Type)> MountPoints() => Mounts.All();
}

/// <summary>
/// The eBPF data plane in the kernel: bpf/sock.c loaded with its maps pinned under
/// <c>&lt;--bpf-fs&gt;/proxyplanes/</c> (reused, contents and all, when a run of the same layout
/// version left them there) and its socket hooks attached to the cgroup by pinned links
/// (<c>link_pp_connect4</c>, ...). A restart finds the links and swaps in the new programs with
/// BPF_LINK_UPDATE, so the hooks are never empty; a link pinned on another cgroup is detached and
/// made anew. The pins keep everything working after this process exits; <see cref="Remove"/> ends it.
/// </summary>
public sealed class EbpfKernel : IEbpfMaps, IDisposable
{
    private readonly BpfObject _object;
    private readonly BpfObject _tc;
    private readonly List<BpfLink> _links;
    private readonly ILogger _logger;
    private readonly Dictionary<string, TcHooks> _tcHooks = new(StringComparer.Ordinal);
    private readonly SocketDestroyer? _sockets;

    // The network namespace Open ran in: the node's interfaces, addresses and nftables table are that
    // namespace's, whichever thread (or namespace) a later sync runs on.
    private readonly SafeBpfHandle _namespace = Interop.CurrentNetworkNamespace();

    private EbpfKernel(EbpfLocation location, BpfObject bpfObject, BpfObject tc, List<BpfLink> links, bool reusedMaps, ILogger logger, bool forceSockDiag)
    {
        Location = location;
        // Before kernel 6.5 the sock_diag fallback (or null where that cannot either): said once, here.
        _sockets = SocketDestroyer.TryLoad(bpfObject.Maps, logger, forceSockDiag);
        _object = bpfObject;
        _tc = tc;
        _links = links;
        _logger = logger;
        ReusedMaps = reusedMaps;
        Services = bpfObject.Map(MapLayout.ServicesMap);
        Backends = bpfObject.Map(MapLayout.BackendsMap);
        Config = bpfObject.Map(MapLayout.ConfigMap);
        NodeAddresses = tc.Map(MapLayout.NodeAddressesMap);
        NodeAddresses6 = tc.Map(MapLayout.NodeAddresses6Map);
        SourceRanges = tc.Map(MapLayout.SourceRangesMap);
        SourceRanges6 = tc.Map(MapLayout.SourceRanges6Map);
        LocalSources = tc.Map(MapLayout.LocalSourcesMap);
        LocalSources6 = tc.Map(MapLayout.LocalSources6Map);
        Connections = tc.Map(MapLayout.ConnectionsMap);
        Connections6 = tc.Map(MapLayout.Connections6Map);
    }

    /// <summary>pp_localsrc4_v1: the IPv4 prefixes Core's detect-local calls pods (see <see cref="LocalSourcesOf"/>).</summary>
    public BpfMap LocalSources { get; }

    /// <summary>pp_localsrc6_v1: the IPv6 prefixes Core's detect-local calls pods (see <see cref="LocalSources6Of"/>).</summary>
    public BpfMap LocalSources6 { get; }

    /// <summary>pp_config_v1: the node's network namespace cookie, so the socket hooks tell a pod's socket from the node's (see <see cref="WriteConfig"/>).</summary>
    public BpfMap Config { get; }

    /// <summary>pp_ct4_v1: the tc programs' connection entries.</summary>
    public BpfMap Connections { get; }

    /// <summary>pp_ct6_v1: the tc programs' IPv6 connection entries.</summary>
    public BpfMap Connections6 { get; }

    /// <summary>pp_nodeip4_v1: the node addresses a node port is served on.</summary>
    public BpfMap NodeAddresses { get; }

    /// <summary>pp_nodeip6_v1: the node IPv6 addresses a node port is served on (key: the 16 bytes).</summary>
    public BpfMap NodeAddresses6 { get; }

    /// <summary>pp_srcrange_v1: the allowed client prefixes of IPv4 frontends with source ranges.</summary>
    public BpfMap SourceRanges { get; }

    /// <summary>pp_srcrange6_v1: the allowed client prefixes of IPv6 frontends with source ranges.</summary>
    public BpfMap SourceRanges6 { get; }

    /// <summary>The interfaces the tc pair is attached to now, by name.</summary>
    public IReadOnlyCollection<string> TcInterfaces => _tcHooks.Keys;

    /// <summary>The pin of the tcx link of the tc program on <paramref name="interfaceName"/> (a clsact filter has none).</summary>
    public static string TcLinkPin(string pinDirectory, string interfaceName, TcDirection direction) =>
        EbpfLocation.LinkPin(pinDirectory, $"tc_{interfaceName}_{(direction == TcDirection.Ingress ? "ingress" : "egress")}");

    public EbpfLocation Location { get; }

    /// <summary>The maps were pinned by an earlier run and are reused with what they hold.</summary>
    public bool ReusedMaps { get; }

    public BpfMap Services { get; }

    public BpfMap Backends { get; }

    /// <summary>Loads, pins and attaches (see the class summary). Throws a one-line <see cref="BpfException"/> when the kernel refuses.</summary>
    public static EbpfKernel Open(EbpfLocation location, ILogger logger) => Open(location, logger, forceSockDiag: false);

    /// <summary>
    /// Test hook: with <paramref name="forceSockDiag"/> the sockets are destroyed through the sock_diag fallback even
    /// where the kernel has the bpf_sock_destroy kfunc (<see cref="SocketDestroyer.TryLoad"/>).
    /// </summary>
    internal static EbpfKernel Open(EbpfLocation location, ILogger logger, bool forceSockDiag)
    {
        EnsureBpfFs(location.BpfFs, logger);
        var directory = location.PinDirectory;
        Directory.CreateDirectory(directory);
        var reused = File.Exists(Path.Combine(directory, MapLayout.ServicesMap));
        var bpfObject = SockPrograms.Load(directory);
        var links = new List<BpfLink>();
        BpfObject? tc = null;
        try
        {
            // The tc pair reads the socket hooks' services, backends and affinity maps; its own maps are pinned beside them.
            tc = TcPrograms.Load(directory, bpfObject.Maps);
            var cgroupId = Interop.CgroupId(location.Cgroup);
            foreach (var name in SockPrograms.All)
            {
                var program = bpfObject.Program(name);
                var pin = EbpfLocation.LinkPin(directory, name);
                if (File.Exists(pin))
                {
                    var pinned = BpfLink.OpenPinned(pin);
                    if (pinned.CgroupId == cgroupId)
                    {
                        pinned.Update(program);
                        links.Add(pinned);
                        continue;
                    }
                    logger.LogInformation("eBPF: the pinned link {Pin} is on another cgroup; detaching it to attach to {Cgroup}", pin, location.Cgroup);
                    TryDetach(pinned);
                    pinned.Dispose();
                    File.Delete(pin);
                }
                var link = program.AttachToCgroup(location.Cgroup);
                links.Add(link);
                link.Pin(pin);
            }
        }
        catch
        {
            foreach (var link in links) link.Dispose();
            tc?.Dispose();
            bpfObject.Dispose();
            throw;
        }
        logger.LogInformation("eBPF: socket hooks on cgroup {Cgroup}, maps {Maps} in {Directory}", location.Cgroup, reused ? "reused" : "created", directory);
        var kernel = new EbpfKernel(location, bpfObject, tc, links, reused, logger, forceSockDiag);
        try
        {
            // The fixed table first: a packet the tc programs mark must find its reject and masquerade rules.
            EbpfNftables.Apply();
            kernel.AttachTcPrograms();
            kernel.WriteConfig();
        }
        catch
        {
            kernel.Dispose();
            throw;
        }
        return kernel;
    }

    /// <summary>
    /// The node's interfaces as the tc programs see them: every interface of this network namespace that is up,
    /// not loopback, and framed as Ethernet (the programs parse an Ethernet header; tunnels of kind tun, wireguard,
    /// ipip, gre, sit, vti and ip6tnl carry bare IP packets and are left alone).
    /// </summary>
    public static IReadOnlyList<LinkInfo> NodeInterfaces(RouteNetlink rtnl)
    {
        ArgumentNullException.ThrowIfNull(rtnl);
        return rtnl.ListLinks()
            .Where(l => l.IsUp && !l.IsLoopback && l.Kind is not ("tun" or "wireguard" or "ipip" or "gre" or "sit" or "vti" or "ip6tnl" or "ip6gre"))
            .OrderBy(l => l.Name, StringComparer.Ordinal)
            .ToList();
    }

    public void SyncNode(NodeNetwork network)
    {
        ArgumentNullException.ThrowIfNull(network);
        RepairPins();
        InOwnNamespace(rtnl =>
        {
            AttachTcPrograms(rtnl);
            WriteNodeAddresses(rtnl, network);
        });
        WriteLocalSources(network);
        WriteConfig();
    }

    /// <summary>
    /// pp_config_v1 made to hold the cookie of the network namespace this kernel was opened in (the node's): the
    /// socket hooks leave a pod's socket (any other namespace) on a frontend whose verdict masquerades it, for tc on
    /// the pod's veth (bpf/README.md, "What the socket hooks do").
    /// </summary>
    private void WriteConfig()
    {
        var config = new NodeConfig();
        InOwnNamespace(_ => config.NodeNetns = NetworkNamespaceCookie());
        if (!Config.TryLookup(0u, out NodeConfig current) || current != config) Config.Update(0u, config);
    }

    /// <summary>SO_NETNS_COOKIE of a socket opened on the calling thread: its network namespace's cookie (kernel ≥ 5.14).</summary>
    internal static ulong NetworkNamespaceCookie()
    {
        const int SoNetnsCookie = 71;
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        Span<byte> cookie = stackalloc byte[sizeof(ulong)];
        socket.GetRawSocketOption(1 /* SOL_SOCKET */, SoNetnsCookie, cookie);
        return BitConverter.ToUInt64(cookie);
    }

    /// <summary>
    /// What pp_localsrc4_v1 holds for <paramref name="network"/>: the IPv4 prefixes of Core's detect-local when it
    /// tells pods by prefix (ClusterCIDR, NodeCIDR), flagged <see cref="MapLayout.LocalSourceMasquerade"/> under
    /// --masquerade-all; nothing when it tells them by interface (InterfaceNamePrefix, BridgeInterface) or not at all.
    /// </summary>
    public static IReadOnlyDictionary<LocalSource4Key, LocalSource4Value> LocalSourcesOf(NodeNetwork network) =>
        LocalSourcesOf(network, IpFamily.IPv4, LocalSource4Key.For);

    /// <summary>What pp_localsrc6_v1 holds for <paramref name="network"/>: as <see cref="LocalSourcesOf"/>, the IPv6 prefixes.</summary>
    public static IReadOnlyDictionary<LocalSource6Key, LocalSource4Value> LocalSources6Of(NodeNetwork network) =>
        LocalSourcesOf(network, IpFamily.IPv6, LocalSource6Key.For);

    private static Dictionary<TKey, LocalSource4Value> LocalSourcesOf<TKey>(NodeNetwork network, IpFamily family, Func<IpPrefix, TKey> key)
        where TKey : notnull
    {
        ArgumentNullException.ThrowIfNull(network);
        var detector = network.LocalDetector;
        if (detector.Mode is not (LocalDetectMode.ClusterCidr or LocalDetectMode.NodeCidr)) return [];
        var value = new LocalSource4Value { Flags = network.MasqueradeAll ? MapLayout.LocalSourceMasquerade : 0 };
        return detector.Cidrs.Where(c => c.Family == family).Select(key).Distinct().ToDictionary(k => k, _ => value);
    }

    /// <summary>pp_localsrc4_v1 and pp_localsrc6_v1 made to hold <see cref="LocalSourcesOf"/> and <see cref="LocalSources6Of"/>: stale prefixes deleted, the others written.</summary>
    private void WriteLocalSources(NodeNetwork network)
    {
        Sync(LocalSources, LocalSourcesOf(network));
        Sync(LocalSources6, LocalSources6Of(network));

        static void Sync<TKey>(BpfMap map, IReadOnlyDictionary<TKey, LocalSource4Value> wanted)
            where TKey : unmanaged
        {
            foreach (var key in map.Keys<TKey>().ToList())
                if (!wanted.ContainsKey(key)) map.Delete(key);
            foreach (var (key, value) in wanted)
                if (!map.TryLookup(key, out LocalSource4Value current) || current != value) map.Update(key, value);
        }
    }

    private void AttachTcPrograms() => InOwnNamespace(AttachTcPrograms);

    /// <summary>
    /// Pins again what was unpinned behind our back (the canary's repair): every map of ours and every
    /// socket-hook link, from the fds this process holds. (A tc pair whose pin went is re-attached by
    /// <see cref="AttachTcPrograms(RouteNetlink)"/>.)
    /// </summary>
    private void RepairPins()
    {
        var directory = Location.PinDirectory;
        Directory.CreateDirectory(directory);
        foreach (var map in _object.Maps.Concat(_tc.Maps).Where(m => m.Name.StartsWith("pp_", StringComparison.Ordinal)).DistinctBy(m => m.Name))
        {
            var pin = Path.Combine(directory, map.Name);
            if (File.Exists(pin)) continue;
            map.Pin(pin);
            _logger.LogWarning("eBPF: the pin of map {Map} was gone; pinned it again", map.Name);
        }
        for (var i = 0; i < _links.Count && i < SockPrograms.All.Count; i++)
        {
            var pin = EbpfLocation.LinkPin(directory, SockPrograms.All[i]);
            if (File.Exists(pin)) continue;
            _links[i].Pin(pin);
            _logger.LogWarning("eBPF: the pin of link {Link} was gone; pinned it again", SockPrograms.All[i]);
        }
    }

    /// <summary>Runs <paramref name="action"/> with an rtnetlink socket of the namespace this kernel was opened in, on a thread there.</summary>
    private void InOwnNamespace(Action<RouteNetlink> action)
    {
        using var networkNamespace = _namespace.Borrow();
        Interop.InNetworkNamespace((int)networkNamespace.Fd, () =>
        {
            using var rtnl = RouteNetlink.Open();
            action(rtnl);
        });
    }

    /// <summary>
    /// The ingress/egress pair on every node interface (see <see cref="NodeInterfaces"/>): a tcx link pinned as
    /// <c>link_tc_IFNAME_ingress</c> / <c>_egress</c> (a pin left by an earlier run gets the new program with
    /// BPF_LINK_UPDATE), or, on a kernel without tcx, a clsact filter this process holds. An interface
    /// gone (or made anew under another index) loses its hooks and pins.
    /// </summary>
    private void AttachTcPrograms(RouteNetlink rtnl)
    {
        var directory = Location.PinDirectory;
        var wanted = NodeInterfaces(rtnl).ToDictionary(l => l.Name, StringComparer.Ordinal);
        foreach (var (name, hooks) in _tcHooks.ToList())
        {
            if (wanted.TryGetValue(name, out var link) && link.Index == hooks.IfIndex && hooks.Pinned(directory, name)) continue;
            hooks.Dispose();
            _tcHooks.Remove(name);
            foreach (var direction in new[] { TcDirection.Ingress, TcDirection.Egress })
            {
                var pin = TcLinkPin(directory, name, direction);
                if (!File.Exists(pin)) continue;
                using (var pinned = BpfLink.OpenPinned(pin)) TryDetach(pinned);
                File.Delete(pin);
            }
        }
        // Pins of interfaces that are no longer there (an earlier run's).
        foreach (var pin in Directory.GetFiles(directory, "link_tc_*"))
        {
            var name = Path.GetFileName(pin)["link_tc_".Length..];
            name = name[..name.LastIndexOf('_')];
            if (wanted.ContainsKey(name)) continue;
            using (var pinned = BpfLink.OpenPinned(pin)) TryDetach(pinned);
            File.Delete(pin);
        }
        foreach (var (name, link) in wanted)
        {
            if (_tcHooks.ContainsKey(name)) continue;
            var ingress = Attach(name, TcDirection.Ingress, TcPrograms.Ingress);
            IDisposable egress;
            try
            {
                egress = Attach(name, TcDirection.Egress, TcPrograms.Egress);
            }
            catch
            {
                ingress.Dispose();
                throw;
            }
            _tcHooks[name] = new TcHooks(link.Index, ingress, egress);
            _logger.LogInformation("eBPF: tc programs on {Interface} ({Mode})", name, ingress is TcAttachment { Mode: TcAttachMode.Clsact } ? "clsact" : "tcx");
        }
    }

    private IDisposable Attach(string interfaceName, TcDirection direction, string programName)
    {
        var program = _tc.Program(programName);
        var pin = TcLinkPin(Location.PinDirectory, interfaceName, direction);
        if (File.Exists(pin))
        {
            var pinned = BpfLink.OpenPinned(pin);
            try
            {
                pinned.Update(program);
                return pinned;
            }
            catch (BpfException)
            {
                // A link whose interface went away (defunct): make a new one.
                pinned.Dispose();
                File.Delete(pin);
            }
        }
        var attachment = program.AttachTc(interfaceName, direction);
        if (attachment.Mode == TcAttachMode.Tcx)
        {
            try
            {
                attachment.Pin(pin);
            }
            catch
            {
                attachment.Dispose();
                throw;
            }
        }
        return attachment;
    }

    /// <summary>
    /// pp_nodeip4_v1 and pp_nodeip6_v1 made to hold the node's addresses that accept node ports: <c>--nodeport-addresses</c>'
    /// choice when it is set, else every address of a non-loopback interface (as the IPVS mode); IPv6 link-local ones never.
    /// </summary>
    private void WriteNodeAddresses(RouteNetlink rtnl, NodeNetwork network)
    {
        var loopback = rtnl.ListLinks().Where(l => l.IsLoopback).Select(l => l.Index).ToHashSet();
        var addresses = network.NodePortAddresses is { } chosen
            ? chosen.AsEnumerable()
            : rtnl.ListAddresses().Where(a => !loopback.Contains(a.InterfaceIndex)).Select(a => a.Address);
        var usable = addresses.Where(a => !IPAddress.IsLoopback(a) && !a.IsIPv6LinkLocal).ToList();
        Sync(NodeAddresses, usable.Where(a => a.AddressFamily == AddressFamily.InterNetwork).Select(MapLayout.NetworkAddress).ToHashSet());
        Sync(NodeAddresses6, usable.Where(a => a.AddressFamily == AddressFamily.InterNetworkV6).Select(MapAddress.For).ToHashSet());

        static void Sync<TKey>(BpfMap map, HashSet<TKey> wanted)
            where TKey : unmanaged
        {
            foreach (var key in map.Keys<TKey>().ToList())
                if (!wanted.Contains(key)) map.Delete(key);
            foreach (var key in wanted)
                if (!map.TryLookup(key, out NodeAddress _)) map.Update(key, default(NodeAddress));
        }
    }

    /// <summary>The tc pair on one interface: tcx links (pinned) or clsact filters (held by this process).</summary>
    private sealed class TcHooks(int ifIndex, IDisposable ingress, IDisposable egress) : IDisposable
    {
        public int IfIndex { get; } = ifIndex;

        /// <summary>A tcx pair's pins are still there (a clsact pair has none to lose).</summary>
        public bool Pinned(string directory, string name) =>
            ingress is TcAttachment { Mode: TcAttachMode.Clsact } ||
            (File.Exists(TcLinkPin(directory, name, TcDirection.Ingress)) && File.Exists(TcLinkPin(directory, name, TcDirection.Egress)));

        public void Dispose()
        {
            ingress.Dispose();
            egress.Dispose();
        }
    }

    public EbpfMapContents Read()
    {
        // Plain tables handed over as the snapshot's frozen base (a full sync plans on them; no immutable copy to build).
        var services = ReadAll<ServiceKey, ServiceValue>(Services);
        var backends = ReadAll<uint, Backend>(Backends);
        return new EbpfMapContents(OverlayTable<ServiceKey, ServiceValue>.Over(services), OverlayTable<uint, Backend>.Over(backends))
        {
            SourceRanges = [.. SourceRanges.Keys<SourceRange4Key>().Select(SourceRange.From), .. SourceRanges6.Keys<SourceRange6Key>().Select(SourceRange.From)],
        };
    }

    /// <summary>
    /// Every entry of <paramref name="map"/>, in a table sized to the keys walked (grown by doubling, it held up to twice the
    /// room it needed).
    /// </summary>
    private static Dictionary<TKey, TValue> ReadAll<TKey, TValue>(BpfMap map)
        where TKey : unmanaged
        where TValue : unmanaged
    {
        var keys = map.Keys<TKey>();
        var entries = new Dictionary<TKey, TValue>(keys.Count);
        foreach (var key in keys)
            if (map.TryLookup(key, out TValue value)) entries[key] = value;
        return entries;
    }

    public void Write(MapWrite write)
    {
        switch (write)
        {
            case BackendUpdate u: Backends.Update(u.Id, u.Value); break;
            case BackendDelete d: Backends.Delete(d.Id); break;
            case ServiceUpdate u: Services.Update(u.Key, u.Value); break;
            case ServiceDelete d: Services.Delete(d.Key); break;
            case SourceRangeUpdate { Key.Prefix.Family: IpFamily.IPv4 } u: SourceRanges.Update(u.Key.Key4, 0u); break;
            case SourceRangeUpdate u: SourceRanges6.Update(u.Key.Key6, 0u); break;
            case SourceRangeDelete { Key.Prefix.Family: IpFamily.IPv4 } d: SourceRanges.Delete(d.Key.Key4); break;
            case SourceRangeDelete d: SourceRanges6.Delete(d.Key.Key6); break;
            default: throw new ArgumentException($"unknown map write {write}", nameof(write));
        }
    }

    /// <summary>
    /// A run of service or backend updates (a cold sync is nearly all of them) in one BPF_MAP_UPDATE_BATCH per map
    /// (<see cref="BpfMap.UpdateBatch{TKey, TValue}"/>, single updates where the kernel has no batch); anything else, or
    /// a mixed run, one write at a time.
    /// </summary>
    public int Write(ReadOnlySpan<MapWrite> writes, out BpfException? refused)
    {
        if (writes.Length > 1 && writes[0] is ServiceUpdate) return Batch<ServiceUpdate, ServiceKey, ServiceValue>(Services, writes, out refused);
        if (writes.Length > 1 && writes[0] is BackendUpdate) return Batch<BackendUpdate, uint, Backend>(Backends, writes, out refused);
        return IEbpfMaps.OneByOne(this, writes, out refused);
    }

    /// <summary>
    /// A run of updates of one map laid out as the kernel reads them (pooled arrays, one pass, no per-entry objects) in
    /// one <see cref="BpfMap.UpdateBatch{TKey, TValue}"/>; a run that is not all <typeparamref name="TUpdate"/> goes one
    /// write at a time.
    /// </summary>
    private int Batch<TUpdate, TKey, TValue>(BpfMap map, ReadOnlySpan<MapWrite> writes, out BpfException? refused)
        where TUpdate : MapWrite, IMapUpdate<TKey, TValue>
        where TKey : unmanaged
        where TValue : unmanaged
    {
        var keys = ArrayPool<TKey>.Shared.Rent(writes.Length);
        var values = ArrayPool<TValue>.Shared.Rent(writes.Length);
        try
        {
            for (var i = 0; i < writes.Length; i++)
            {
                if (writes[i] is not TUpdate update) return IEbpfMaps.OneByOne(this, writes, out refused);
                keys[i] = update.Key;
                values[i] = update.Value;
            }
            return map.UpdateBatch<TKey, TValue>(keys.AsSpan(0, writes.Length), values.AsSpan(0, writes.Length), out refused);
        }
        finally
        {
            ArrayPool<TKey>.Shared.Return(keys);
            ArrayPool<TValue>.Shared.Return(values);
        }
    }

    public int DeleteConnections(IReadOnlyList<NodeTools.Conntrack.ConntrackDeletion> deletions) =>
        StaleConnections.Delete(Connections, deletions) + StaleConnections.Delete6(Connections6, deletions);

    /// <summary>One BPF_MAP_GET_NEXT_KEY per connection map (a first key or none).</summary>
    public bool HoldsConnections() => !Connections.IsEmpty() || !Connections6.IsEmpty();

    /// <summary>This kernel destroys the connected UDP sockets of a removed endpoint (bpf_sock_destroy, kernel ≥ 6.5, else sock_diag SOCK_DESTROY).</summary>
    public bool DestroysSockets => _sockets is not null;

    /// <summary>Sockets are destroyed through sock_diag SOCK_DESTROY (the fallback before kernel 6.5), not the bpf iterators.</summary>
    public bool DestroysSocketsBySockDiag => _sockets?.UsesSockDiag == true;

    /// <summary>pp_sockdel_v1 (empty between passes), or null on a kernel that cannot destroy sockets or with the sock_diag fallback.</summary>
    public BpfMap? SocketDeletions => _sockets?.Deletions;

    /// <summary>pp_sockvip_v1 (empty between passes), or null on a kernel that cannot destroy sockets or with the sock_diag fallback.</summary>
    public BpfMap? SocketReopened => _sockets?.Reopened;

    /// <summary>
    /// <see cref="SocketDestroyer.Destroy"/> in the namespace this kernel was opened in (the node's) and in every
    /// named one (<see cref="SocketDestroyer.NamedNamespaces"/>: pods'); 0 on a kernel that cannot.
    /// </summary>
    public int DestroySockets(IReadOnlyList<NodeTools.Conntrack.ConntrackDeletion> deletions, IReadOnlyList<ServiceKey>? reopened = null)
    {
        if (_sockets is null) return 0;
        using var own = _namespace.Borrow();
        return _sockets.Destroy(deletions, [$"/proc/self/fd/{own.Fd}", .. SocketDestroyer.NamedNamespaces()], reopened);
    }

    public bool Intact() =>
        File.Exists(Path.Combine(Location.PinDirectory, MapLayout.ServicesMap)) &&
        File.Exists(Path.Combine(Location.PinDirectory, MapLayout.BackendsMap)) &&
        File.Exists(Path.Combine(Location.PinDirectory, MapLayout.SourceRangesMap)) &&
        File.Exists(Path.Combine(Location.PinDirectory, MapLayout.SourceRanges6Map)) &&
        File.Exists(Path.Combine(Location.PinDirectory, MapLayout.NodeAddressesMap)) &&
        File.Exists(Path.Combine(Location.PinDirectory, MapLayout.LocalSourcesMap)) &&
        File.Exists(Path.Combine(Location.PinDirectory, MapLayout.LocalSources6Map)) &&
        SockPrograms.All.All(p => File.Exists(EbpfLocation.LinkPin(Location.PinDirectory, p))) &&
        _tcHooks.All(h => h.Value.Pinned(Location.PinDirectory, h.Key));

    /// <summary>
    /// Closes our fds; the pinned links and maps stay (traffic keeps flowing). Clsact filters (a kernel
    /// without tcx) cannot be pinned and go with this process; the next start attaches them again.
    /// </summary>
    public void Dispose()
    {
        foreach (var hooks in _tcHooks.Values) hooks.Dispose();
        _tcHooks.Clear();
        foreach (var link in _links) link.Dispose();
        _sockets?.Dispose();
        _tc.Dispose();
        _object.Dispose();
        _namespace.Dispose();
    }

    /// <summary>
    /// What the mode set up in the calling thread's network namespace besides the pins: the clsact filters of a
    /// kernel without tcx (found by their handle and priority on every interface, whichever process attached
    /// them) and the fixed nftables table <c>inet proxyplanes-ebpf</c>. (The tcx links are pins, removed by <see cref="Remove"/>.)
    /// </summary>
    public static void RemoveNamespaceState(ILogger logger)
    {
        RemoveClsactFilters(logger);
        try
        {
            EbpfNftables.Remove();
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return; // no nft on this node: the mode never ran here (it needs nft to start)
        }
        logger.LogInformation("eBPF: removed nftables table inet {Table}", EbpfNftables.Table);
    }

    /// <summary>Deletes our clsact filters (<see cref="ClsactAttachment.DetachLeftBehind"/>) on every interface of the calling thread's namespace.</summary>
    private static void RemoveClsactFilters(ILogger logger)
    {
        using var rtnl = RouteNetlink.Open();
        var removed = new List<string>();
        foreach (var link in rtnl.ListLinks())
        {
            foreach (var direction in new[] { TcDirection.Ingress, TcDirection.Egress })
                if (ClsactAttachment.DetachLeftBehind(link.Index, direction)) removed.Add($"{link.Name} {direction.ToString().ToLowerInvariant()}");
        }
        if (removed.Count > 0) logger.LogInformation("eBPF: removed the clsact filters of the tc programs on {Hooks}", string.Join(", ", removed));
    }

    /// <summary>
    /// Detaches every pinned link (BPF_LINK_DETACH, so the hooks stop even if another process holds the
    /// link) and removes every pin and the folder: the programs and maps go with their last reference.
    /// Returns what was removed (empty when nothing was there).
    /// </summary>
    public static IReadOnlyList<string> Remove(string bpfFs, ILogger logger)
    {
        var directory = Path.Combine(bpfFs, EbpfLocation.PinFolder);
        if (!Directory.Exists(directory)) return [];
        var removed = new List<string>();
        foreach (var pin in Directory.GetFiles(directory).Order(StringComparer.Ordinal))
        {
            if (Path.GetFileName(pin).StartsWith("link_", StringComparison.Ordinal))
            {
                using var link = BpfLink.OpenPinned(pin);
                TryDetach(link);
            }
            File.Delete(pin);
            removed.Add(Path.GetFileName(pin));
        }
        Directory.Delete(directory);
        logger.LogInformation("eBPF: detached and unpinned {Pins} in {Directory}", string.Join(", ", removed), directory);
        return removed;
    }

    /// <summary>Mounts a bpf filesystem at <paramref name="directory"/> unless one is there.</summary>
    public static void EnsureBpfFs(string directory, ILogger logger)
    {
        if (EbpfLocation.IsBpfFs(directory)) return;
        Directory.CreateDirectory(directory);
        Interop.MountBpfFs(directory);
        logger.LogInformation("eBPF: mounted a bpf filesystem at {Directory}", directory);
    }

    /// <summary>A link whose cgroup is gone is already detached (ENOLINK): nothing to do.</summary>
    private static void TryDetach(BpfLink link)
    {
        try
        {
            link.Detach();
        }
        catch (BpfException e) when (e.Errno == 67)
        {
        }
    }
}
