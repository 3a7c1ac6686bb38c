using System.Buffers.Binary;
using System.Collections.Immutable;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>One write to the maps of layout <see cref="MapLayout.Version"/>; <see cref="ToString"/> is one line of the plan.</summary>
public abstract record MapWrite
{
    /// <summary>The map written (<see cref="MapLayout.ServicesMap"/> or <see cref="MapLayout.BackendsMap"/>).</summary>
    public abstract string Map { get; }
}

/// <summary>A write of one key and value, which a run of its kind sends in one batch (<c>EbpfKernel.Write</c>).</summary>
internal interface IMapUpdate<TKey, TValue>
{
    TKey Key { get; }
    TValue Value { get; }
}

/// <summary>Creates or replaces a backend (BPF_ANY on <c>pp_backends_v2</c>).</summary>
public sealed record BackendUpdate(uint Id, Backend Value) : MapWrite, IMapUpdate<uint, Backend>
{
    public override string Map => MapLayout.BackendsMap;

    uint IMapUpdate<uint, Backend>.Key => Id;

    public override string ToString() => $"backend {Id} = {EbpfText.Backend(Value)}";
}

/// <summary>Deletes a backend no slot refers to any more.</summary>
public sealed record BackendDelete(uint Id) : MapWrite
{
    public override string Map => MapLayout.BackendsMap;

    public override string ToString() => $"delete backend {Id}";
}

/// <summary>Creates or replaces a master entry or a slot (BPF_ANY on <c>pp_services_v2</c>); <paramref name="Owner"/> names the service port for the reader.</summary>
public sealed record ServiceUpdate(ServiceKey Key, ServiceValue Value, ServicePortName Owner) : MapWrite, IMapUpdate<ServiceKey, ServiceValue>
{
    public override string Map => MapLayout.ServicesMap;

    public override string ToString() =>
        Key.Slot == 0
            ? $"service {EbpfText.Frontend(Key)} master count {Value.Count}{EbpfText.Flags(Value)} revnat {Value.RevNatId}  # {Owner}"
            : $"service {EbpfText.Frontend(Key)} slot {Key.Slot} = backend {Value.BackendId}  # {Owner}";
}

/// <summary>Deletes a master entry or a slot.</summary>
public sealed record ServiceDelete(ServiceKey Key) : MapWrite
{
    public override string Map => MapLayout.ServicesMap;

    public override string ToString() => Key.Slot == 0 ? $"delete service {EbpfText.Frontend(Key)} master" : $"delete service {EbpfText.Frontend(Key)} slot {Key.Slot}";
}

/// <summary>
/// An allowed client prefix of a frontend with source ranges, either family, keyed by its master's reverse-NAT id:
/// an IPv4 prefix lives in <c>pp_srcrange_v1</c> (<see cref="SourceRange4Key"/>), an IPv6 one in <c>pp_srcrange6_v1</c>
/// (<see cref="SourceRange6Key"/>); <see cref="Map"/> says which.
/// </summary>
public readonly record struct SourceRange(uint RevNatId, IpPrefix Prefix)
{
    public string Map => Prefix.Family == IpFamily.IPv4 ? MapLayout.SourceRangesMap : MapLayout.SourceRanges6Map;

    public SourceRange4Key Key4 => SourceRange4Key.For(RevNatId, Prefix.Address, Prefix.Length);

    public SourceRange6Key Key6 => SourceRange6Key.For(RevNatId, Prefix.Address, Prefix.Length);

    public static SourceRange From(SourceRange4Key key) => new(key.RevNatId, new IpPrefix(MapLayout.HostAddress(key.Address), (int)key.Prefixlen - 32));

    public static SourceRange From(SourceRange6Key key) => new(key.RevNatId, new IpPrefix(key.Address.ToIPAddress(), (int)key.Prefixlen - 32));

    /// <summary><c>203.0.113.0/24 revnat 3</c>.</summary>
    public override string ToString() => $"{Prefix} revnat {RevNatId}";
}

/// <summary>Adds an allowed client prefix of a frontend with source ranges (<c>pp_srcrange_v1</c> or <c>pp_srcrange6_v1</c>, by its family).</summary>
public sealed record SourceRangeUpdate(SourceRange Key, ServicePortName Owner) : MapWrite
{
    public override string Map => Key.Map;

    public override string ToString() => $"source-range {Key}  # {Owner}";
}

/// <summary>Deletes an allowed client prefix no master entry wants any more.</summary>
public sealed record SourceRangeDelete(SourceRange Key) : MapWrite
{
    public override string Map => Key.Map;

    public override string ToString() => $"delete source-range {Key}";
}

/// <summary>What the maps hold (read by a full sync, or remembered from the last plan).</summary>
public sealed record EbpfMapContents(OverlayTable<ServiceKey, ServiceValue> Services, OverlayTable<uint, Backend> Backends)
{
    public static EbpfMapContents Empty { get; } = new(OverlayTable<ServiceKey, ServiceValue>.Empty, OverlayTable<uint, Backend>.Empty);

    /// <summary>The allowed client prefixes in <c>pp_srcrange_v1</c> (IPv4) and <c>pp_srcrange6_v1</c> (IPv6).</summary>
    public ImmutableHashSet<SourceRange> SourceRanges { get; init; } = ImmutableHashSet<SourceRange>.Empty;
}

/// <summary>
/// What the planner remembers between syncs: the maps as the last plan left them, which master
/// entries each service port claims (two ports may claim one frontend: the first by name wins), the
/// slot references of each backend id, and free backend and reverse-NAT ids. Each table is a frozen base (what the last
/// full sync planned) under an overlay of the partial syncs since (<see cref="OverlayTable{TKey,TValue}"/>).
/// </summary>
public sealed record EbpfPlannerState(
    EbpfMapContents Maps,
    OverlayTable<ServicePortName, ImmutableArray<ServiceKey>> Ports,
    OverlayTable<ServiceKey, ImmutableSortedSet<ServicePortName>> Claims,
    OverlayTable<Backend, uint> BackendIds,
    OverlayTable<uint, int> BackendReferences,
    IdPool BackendIdPool,
    IdPool RevNatIdPool)
{
    public int MasterEntries => Maps.Services.Keys.Count(k => k.Slot == 0);
}

/// <summary>Ids from 1 up: freed ids are reused (lowest first) before new ones are taken.</summary>
public sealed record IdPool(ImmutableSortedSet<uint> Free, uint Next)
{
    public static IdPool Empty { get; } = new(ImmutableSortedSet<uint>.Empty, 1);

    /// <summary>The pool around the ids in use: the gaps below the highest are free.</summary>
    public static IdPool Around(IEnumerable<uint> used)
    {
        var set = used.ToHashSet();
        var max = set.Count == 0 ? 0u : set.Max();
        var free = ImmutableSortedSet.CreateBuilder<uint>();
        for (var id = 1u; id < max; id++)
            if (!set.Contains(id)) free.Add(id);
        return new IdPool(free.ToImmutable(), max + 1);
    }

    public (uint Id, IdPool Pool) Take() =>
        Free.Count > 0 ? (Free.Min, this with { Free = Free.Remove(Free.Min) }) : (Next, this with { Next = checked(Next + 1) });

    public IdPool Release(uint id) => this with { Free = Free.Add(id) };
}

/// <summary>
/// The planner's output: the map writes in the order they must reach the kernel (<see cref="ToString"/>
/// prints them, one per line), and the state the maps are in once all are applied.
/// </summary>
public sealed record EbpfPlan(ImmutableArray<MapWrite> Writes, EbpfPlannerState State, bool Full)
{
    /// <summary>
    /// How many writes the plan made: <see cref="Writes"/>' length, kept when the writes are let go
    /// (<see cref="EbpfBackend.LastPlan"/> of a full sync).
    /// </summary>
    public int WriteCount { get; init; } = Writes.Length;

    public override string ToString()
    {
        var text = new StringBuilder();
        text.Append("# ").Append(Full ? "full" : "partial").Append(" sync: ").Append(Writes.Length).Append(" map writes");
        text.Append('\n');
        foreach (var write in Writes) text.Append(write).Append('\n');
        return text.ToString();
    }
}

/// <summary>
/// Pure planner of the eBPF data plane: Core's IPv4 and IPv6 verdicts (+ the changed service ports, + what a
/// full sync read from the maps) → the map writes that make the maps match, in the one order a
/// program running meanwhile can bear: new backends, then slots, then master entries (the switch
/// point: a program never sees a count above the slots written), then stale slots, then backends no
/// slot refers to. Each frontend is a master entry (slot 0: count, flags, affinity timeout,
/// reverse-NAT id) and slots 1..count (a backend id each):
/// <list type="bullet">
/// <item>a cluster IP: scope internal, the internal traffic verdict;</item>
/// <item>an external or load-balancer IP (<see cref="MapLayout.ServiceFlagExternal"/>) and a node port
/// (its family's unspecified address, <see cref="MapLayout.ServiceFlagNodePort"/>): scope internal holds what local clients
/// get (the cluster pool when Core short-circuits them under externalTrafficPolicy Local), scope
/// external what off-node clients get, present only when it differs;</item>
/// <item>Core's Drop is count 0 with <see cref="MapLayout.ServiceFlagDrop"/>, Reject is count 0.</item>
/// </list>
/// Source ranges flag a load-balancer IP's master (<see cref="MapLayout.ServiceFlagSourceRanges"/>) and write its
/// prefixes into the tc programs' LPM trie of its family (<see cref="SourceRange"/>). IPv6 frontends share the maps
/// (16-byte addresses, IPv4 held as ::ffff:a.b.c.d), each family rendered from Core's verdict for it.
/// </summary>
public sealed class EbpfPlanner
{
    /// <summary>
    /// Plans one sync. Full when <paramref name="request"/> says so or <paramref name="previous"/> is
    /// null: <paramref name="maps"/> (required then) is diffed against everything wanted, and the
    /// backend and reverse-NAT ids found there are kept. Otherwise partial: only the frontends the
    /// changed service ports had or get are touched.
    /// </summary>
    public EbpfPlan Plan(SyncRequest request, EbpfPlannerState? previous, EbpfMapContents? maps)
    {
        ArgumentNullException.ThrowIfNull(request);
        return request.Full || previous is null
            ? PlanFull(request, maps ?? throw new ArgumentNullException(nameof(maps), "a full sync needs the maps' contents"))
            : PlanPartial(request, previous);
    }

    /// <summary>
    /// Everything wanted against <paramref name="maps"/>: planned in mutable tables sized up front (<see cref="Work.FromMaps"/>),
    /// frozen once into the state partial syncs build on; each frontend's winner (the least name claiming it) is kept as the
    /// ports are walked, so no key looks its claimants up again.
    /// </summary>
    private static EbpfPlan PlanFull(SyncRequest request, EbpfMapContents maps)
    {
        var ports = new List<(ServicePortName Name, ImmutableArray<Frontend> Frontends)>(request.State.ServicePorts.Count);
        var wanted = new Dictionary<ServiceKey, Frontend>(request.State.ServicePorts.Count);
        var entries = 0;
        foreach (var (name, port) in request.State.ServicePorts)
        {
            var frontends = Frontends(port);
            if (frontends.IsEmpty) continue;
            ports.Add((name, frontends));
            foreach (var frontend in frontends)
            {
                entries += 1 + frontend.Backends.Length;
                if (!wanted.TryGetValue(frontend.Key, out var claimed) || Comparer<ServicePortName>.Default.Compare(name, claimed.Owner) < 0)
                    wanted[frontend.Key] = frontend;
            }
        }
        var work = Work.FromMaps(maps, entries);
        foreach (var (name, frontends) in ports)
        {
            var keys = ImmutableArray.CreateBuilder<ServiceKey>(frontends.Length);
            foreach (var frontend in frontends)
            {
                keys.Add(frontend.Key);
                work.Claim(frontend.Key, name);
            }
            work.Ports[name] = keys.MoveToImmutable();
        }
        if (maps.Services.Count == 0 && maps.Backends.Count == 0 && maps.SourceRanges.IsEmpty)
        {
            // A cold sync (empty maps: a first start, a reboot): nothing to diff, every entry is new (Work.Add).
            var order = new KeyValuePair<ServiceKey, Frontend>[wanted.Count];
            ((ICollection<KeyValuePair<ServiceKey, Frontend>>)wanted).CopyTo(order, 0);
            Array.Sort(order, static (x, y) => ServiceKeyComparer.Instance.Compare(x.Key, y.Key));
            work.Reserve(entries, order.Length);
            foreach (var (key, frontend) in order) work.Add(key, frontend);
        }
        else
        {
            var order = work.Claims.Keys.Concat(work.SlotsByMaster.Keys).Distinct().ToArray();
            Array.Sort(order, ServiceKeyComparer.Instance);
            foreach (var key in order) work.Reconcile(key, wanted.GetValueOrDefault(key), full: true);
        }
        return new EbpfPlan(work.Writes(), work.State(), Full: true);
    }

    /// <summary>Only the frontends the changed service ports had or get, over the immutable state's builders (proportional to the change).</summary>
    private static EbpfPlan PlanPartial(SyncRequest request, EbpfPlannerState previous)
    {
        var built = new Dictionary<ServicePortName, ImmutableArray<Frontend>>();
        ImmutableArray<Frontend> FrontendsOf(ServicePortName name, ServicePortState port) =>
            built.TryGetValue(name, out var frontends) ? frontends : built[name] = Frontends(port);
        var work = Work.From(previous);
        var keys = new HashSet<ServiceKey>();
        foreach (var name in request.ChangedPorts)
        {
            if (work.Ports.TryGetValue(name, out var before))
            {
                foreach (var key in before) { work.Unclaim(key, name); keys.Add(key); }
                work.Ports.Remove(name);
            }
            if (!request.State.ServicePorts.TryGetValue(name, out var port)) continue;
            var frontends = FrontendsOf(name, port);
            if (frontends.IsEmpty) continue;
            work.Ports[name] = frontends.Select(f => f.Key).ToImmutableArray();
            foreach (var frontend in frontends) { work.Claim(frontend.Key, name); keys.Add(frontend.Key); }
        }

        foreach (var key in keys.Order(ServiceKeyComparer.Instance))
        {
            Frontend? wanted = null;
            if (work.Claims.TryGetValue(key, out var claimants) && request.State.ServicePorts.TryGetValue(claimants.Min!, out var winner))
                wanted = FrontendsOf(claimants.Min!, winner).First(f => f.Key == key);
            work.Reconcile(key, wanted, full: false);
        }
        return new EbpfPlan(work.Writes(), work.State(), Full: false);
    }

    /// <summary>A master entry to render: its key, what goes into slot 0 (without the reverse-NAT id) and the backends of its slots.</summary>
    public sealed record Frontend(ServiceKey Key, ushort Flags, uint AffinityTimeout, ImmutableArray<Backend> Backends, ServicePortName Owner, ImmutableArray<IpPrefix> SourceRanges = default);

    /// <summary>Every frontend of a service port, IPv4 and IPv6 (a family without a cluster IP has none), sorted by key.</summary>
    /// <remarks>
    /// Loops rather than LINQ: a cold sync calls this once per service port (10,000 and more), and the walk was a sixth of
    /// the planner's time. The sort is stable (an insertion sort over a handful), as <c>Order</c> was.
    /// </remarks>
    public static ImmutableArray<Frontend> Frontends(ServicePortState port)
    {
        ArgumentNullException.ThrowIfNull(port);
        var frontends = new List<Frontend>(2);
        AddFrontends(port, IpFamily.IPv4, frontends);
        AddFrontends(port, IpFamily.IPv6, frontends);
        if (frontends.Count == 0) return [];
        var sorted = ImmutableArray.CreateBuilder<Frontend>(frontends.Count);
        foreach (var frontend in frontends)
        {
            var at = sorted.Count;
            while (at > 0 && ServiceKeyComparer.Instance.Compare(sorted[at - 1].Key, frontend.Key) > 0) at--;
            sorted.Insert(at, frontend);
        }
        return sorted.MoveToImmutable();
    }

    /// <summary>The frontends of one family, from Core's verdict for that family, each key once (the first kept).</summary>
    private static void AddFrontends(ServicePortState port, IpFamily family, List<Frontend> frontends)
    {
        var info = port.Info;
        var addressFamily = family == IpFamily.IPv4 ? AddressFamily.InterNetwork : AddressFamily.InterNetworkV6;
        IPAddress? clusterIP = null;
        foreach (var address in info.ClusterIPs)
        {
            if (address.AddressFamily != addressFamily) continue;
            clusterIP = address;
            break;
        }
        if (clusterIP is null) return;
        var first = frontends.Count;
        var verdict = port.VerdictFor(family);
        var protocol = ProtocolNumber(info.Protocol);

        var affinity = verdict.AffinityTimeoutSeconds is null ? (ushort)0 : MapLayout.ServiceFlagAffinity;
        var timeout = (uint)(verdict.AffinityTimeoutSeconds ?? 0);
        // The allowed prefixes of this family's frontends, in its LPM trie (pp_srcrange_v1, pp_srcrange6_v1), read by tc.
        var ranges = verdict.SourceRanges.IsEmpty ? ImmutableArray<IpPrefix>.Empty
            : verdict.SourceRanges.Where(r => r.Family == family).Distinct().Order(Comparer<IpPrefix>.Create(SourceRangeComparer.ComparePrefixes)).ToImmutableArray();

        // Cluster IP: internal traffic only (an off-node client of a cluster IP is internal traffic too).
        var internalMasquerade = verdict.InternalMasquerade switch
        {
            SourceMasquerade.AllSources => (ushort)(MapLayout.ServiceFlagMasquerade | MapLayout.ServiceFlagMasqueradeLocal),
            SourceMasquerade.OffClusterSources => MapLayout.ServiceFlagMasquerade,
            _ => (ushort)0,
        };
        Add(Make(ServiceKey.For(clusterIP, info.Port, protocol), verdict.InternalTraffic, (ushort)(affinity | internalMasquerade)));
        if (!info.HasExternalFrontends) return;

        // External frontends: local clients get the short-circuit (cluster pool) under Local policy, everyone else the external verdict.
        var externalMasquerade = verdict.ExternalMasquerade ? MapLayout.ServiceFlagMasquerade : (ushort)0;
        var forLocalClients = verdict.LocalShortCircuit != LocalShortCircuit.None && !verdict.ClusterEndpoints.IsEmpty
            ? TrafficVerdict.Forward(EndpointPool.Cluster, verdict.ClusterEndpoints)
            : verdict.ExternalTraffic;
        foreach (var address in info.ExternalIPs)
            if (address.AddressFamily == addressFamily) AddExternal(ServiceKey.For(address, info.Port, protocol), MapLayout.ServiceFlagExternal);
        // A range holding a node IP lets the node's own sockets through (pp_egress; kube-proxy's answer for the node).
        var sourceRanges = ranges.IsEmpty ? (ushort)0
            : verdict.SourceRangesAllowNode ? (ushort)(MapLayout.ServiceFlagSourceRanges | MapLayout.ServiceFlagSourceRangesNode)
            : MapLayout.ServiceFlagSourceRanges;
        foreach (var address in info.LoadBalancerIPs)
            if (address.AddressFamily == addressFamily) AddExternal(ServiceKey.For(address, info.Port, protocol), (ushort)(MapLayout.ServiceFlagExternal | sourceRanges));
        if (info.NodePort != 0)
            AddExternal(ServiceKey.For(family == IpFamily.IPv4 ? IPAddress.Any : IPAddress.IPv6Any, info.NodePort, protocol), MapLayout.ServiceFlagNodePort);

        void AddExternal(ServiceKey key, ushort kindFlags)
        {
            var flags = (ushort)(kindFlags | affinity | externalMasquerade);
            var local = Make(key, forLocalClients, flags);
            Add(local);
            var offNode = Make(key with { Scope = MapLayout.ScopeExternal }, verdict.ExternalTraffic, flags);
            if (offNode.Flags != local.Flags || !offNode.Backends.SequenceEqual(local.Backends)) Add(offNode);
        }

        // One master entry per key: an external IP equal to the cluster IP (or listed twice) keeps the first.
        void Add(Frontend frontend)
        {
            for (var i = first; i < frontends.Count; i++)
                if (frontends[i].Key == frontend.Key) return;
            frontends.Add(frontend);
        }

        Frontend Make(ServiceKey key, TrafficVerdict traffic, ushort flags)
        {
            if (traffic.Action == TrafficAction.Drop) flags |= MapLayout.ServiceFlagDrop;
            return new Frontend(key, flags, (flags & MapLayout.ServiceFlagAffinity) != 0 ? timeout : 0,
                traffic.IsForward ? Backends(traffic.Endpoints, family, protocol) : [], info.Name,
                (flags & MapLayout.ServiceFlagSourceRanges) != 0 ? ranges : []);
        }
    }

    /// <summary>The backends of <paramref name="endpoints"/> of one family, in endpoint order (address, then port).</summary>
    private static ImmutableArray<Backend> Backends(EquatableArray<EndpointInfo> endpoints, IpFamily family, ProtocolType protocol)
    {
        var count = 0;
        foreach (var endpoint in endpoints)
            if (endpoint.Family == family) count++;
        if (count == 0) return [];
        var backends = new Backend[count];
        var i = 0;
        foreach (var endpoint in endpoints)
            if (endpoint.Family == family) backends[i++] = Backend.For(endpoint.Address, endpoint.Port, protocol);
        // EndpointInfo's order (address bytes, then port) is the backends' (one family: mapped IPv4 shares its prefix); equal
        // endpoints make equal backends, so an unstable sort orders them as a stable one would. Core's are often sorted already.
        for (i = 1; i < backends.Length; i++)
        {
            if (BackendOrder.Compare(backends[i - 1], backends[i]) <= 0) continue;
            Array.Sort(backends, BackendOrder);
            break;
        }
        return ImmutableCollectionsMarshal.AsImmutableArray(backends);
    }

    private static readonly Comparer<Backend> BackendOrder = Comparer<Backend>.Create(static (x, y) =>
    {
        var c = ServiceKeyComparer.CompareAddresses(x.Address, y.Address);
        return c != 0 ? c : MapLayout.HostPort(x.Port).CompareTo(MapLayout.HostPort(y.Port));
    });

    /// <summary>The protocol number a map key holds (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP).</summary>
    public static ProtocolType ProtocolNumber(Protocol protocol) => protocol switch
    {
        Protocol.TCP => ProtocolType.Tcp,
        Protocol.UDP => ProtocolType.Udp,
        Protocol.SCTP => (ProtocolType)132,
        _ => throw new ArgumentOutOfRangeException(nameof(protocol), protocol, null),
    };

    /// <summary>
    /// The slots of each master key among <paramref name="keys"/> (distinct, as a map's are), ascending, slot 0 included when
    /// present: one array each, sized by a first count (a <see cref="SortedSet{T}"/> per master was ~16 MiB of a full sync
    /// over 50,000 × 5; the arrays and the counts ~6 MiB).
    /// </summary>
    internal static Dictionary<ServiceKey, ushort[]> SlotsOf(IEnumerable<ServiceKey> keys)
    {
        var left = new Dictionary<ServiceKey, int>();
        foreach (var key in keys) CollectionsMarshal.GetValueRefOrAddDefault(left, key with { Slot = 0 }, out _)++;
        var slots = new Dictionary<ServiceKey, ushort[]>(left.Count);
        foreach (var (master, count) in left) slots.Add(master, new ushort[count]);
        foreach (var key in keys)
        {
            var master = key with { Slot = 0 };
            slots[master][--CollectionsMarshal.GetValueRefOrNullRef(left, master)] = key.Slot;
        }
        foreach (var array in slots.Values)
            if (array.Length > 1) Array.Sort(array);
        return slots;
    }

    /// <summary>The planner's scratch state for one plan: mutable builders over the previous state, and the writes in their five phases.</summary>
    private sealed class Work
    {
        private readonly List<MapWrite> _newBackends = [];
        private readonly List<MapWrite> _slots = [];
        private readonly List<MapWrite> _masters = [];
        private readonly List<MapWrite> _staleSlots = [];
        private readonly List<MapWrite> _newRanges = [];
        private readonly HashSet<uint> _maybeUnreferenced = [];
        private readonly HashSet<SourceRange> _wantedRanges = [];
        private readonly HashSet<uint> _rangeOwnersTouched = [];
        private bool _allRangesTouched;

        // A partial sync's tables are overlay builders over the previous state (each change proportional to itself); a
        // full sync's are Dictionaries (cheaper by several times per lookup and insert), handed to State() as the new base.
        public required IDictionary<ServiceKey, ServiceValue> Services { get; init; }
        public required IDictionary<uint, Backend> Backends { get; init; }
        public required IDictionary<ServicePortName, ImmutableArray<ServiceKey>> Ports { get; init; }
        public required IDictionary<ServiceKey, ImmutableSortedSet<ServicePortName>> Claims { get; init; }
        public required IDictionary<Backend, uint> BackendIds { get; init; }
        public required IDictionary<uint, int> References { get; init; }
        public required IdPool BackendPool { get; set; }
        public required IdPool RevNatPool { get; set; }
        public required ImmutableHashSet<SourceRange>.Builder Ranges { get; init; }

        /// <summary>Full sync only: the slots (1..) the maps hold under each master key, slot 0 included when present (<see cref="SlotsOf"/>).</summary>
        public Dictionary<ServiceKey, ushort[]> SlotsByMaster { get; private init; } = [];

        public static Work From(EbpfPlannerState state) => new()
        {
            Services = state.Maps.Services.ToBuilder(),
            Backends = state.Maps.Backends.ToBuilder(),
            Ports = state.Ports.ToBuilder(),
            Claims = state.Claims.ToBuilder(),
            BackendIds = state.BackendIds.ToBuilder(),
            References = state.BackendReferences.ToBuilder(),
            BackendPool = state.BackendIdPool,
            RevNatPool = state.RevNatIdPool,
            Ranges = state.Maps.SourceRanges.ToBuilder(),
        };

        /// <summary>
        /// Starts from what the maps hold: backend ids by value (the lowest id of a duplicated value;
        /// the others are then unreferenced or rewritten), slot references, and the ids in use.
        /// </summary>
        public static Work FromMaps(EbpfMapContents maps, int wantedEntries)
        {
            // Sized for what is wanted: a cold sync grows no table while planning.
            var backends = Math.Max(maps.Backends.Count, wantedEntries);
            var ids = new Dictionary<Backend, uint>(backends);
            foreach (var (id, backend) in maps.Backends.OrderBy(b => b.Key))
                ids.TryAdd(backend, id);
            var work = new Work
            {
                Services = Table(maps.Services, wantedEntries),
                Backends = Table(maps.Backends, wantedEntries),
                Ports = new Dictionary<ServicePortName, ImmutableArray<ServiceKey>>(),
                Claims = new Dictionary<ServiceKey, ImmutableSortedSet<ServicePortName>>(),
                BackendIds = ids,
                References = new Dictionary<uint, int>(backends),
                BackendPool = IdPool.Around(maps.Backends.Keys),
                RevNatPool = IdPool.Around(maps.Services.Where(s => s.Key.Slot == 0 && s.Value.RevNatId != 0).Select(s => s.Value.RevNatId)),
                Ranges = maps.SourceRanges.ToBuilder(),
                SlotsByMaster = SlotsOf(maps.Services.Keys),
                _allRangesTouched = true,
            };
            foreach (var (key, value) in maps.Services)
                if (key.Slot != 0) work.Reference(value.BackendId, +1);
            foreach (var id in maps.Backends.Keys) work._maybeUnreferenced.Add(id);
            return work;
        }

        public void Claim(ServiceKey key, ServicePortName name) =>
            Claims[key] = Claims.TryGetValue(key, out var set) ? set.Add(name) : ImmutableSortedSet.Create(name);

        public void Unclaim(ServiceKey key, ServicePortName name)
        {
            if (!Claims.TryGetValue(key, out var set)) return;
            set = set.Remove(name);
            if (set.IsEmpty) Claims.Remove(key);
            else Claims[key] = set;
        }

        /// <summary>Writes what makes one master key and its slots match <paramref name="wanted"/> (null: remove them).</summary>
        public void Reconcile(ServiceKey key, Frontend? wanted, bool full)
        {
            Services.TryGetValue(key, out var current);
            var hasMaster = Services.ContainsKey(key);
            var present = full
                ? (SlotsByMaster.TryGetValue(key, out var slots) ? slots.Where(s => s != 0).ToArray() : [])
                : Enumerable.Range(1, hasMaster ? current.Count : 0).Select(i => (ushort)i).ToArray();

            if (wanted is null)
            {
                if (hasMaster)
                {
                    _masters.Add(new ServiceDelete(key));
                    Services.Remove(key);
                    _rangeOwnersTouched.Add(current.RevNatId);
                    if (current.RevNatId != 0) RevNatPool = RevNatPool.Release(current.RevNatId);
                }
                foreach (var slot in present) DeleteSlot(key with { Slot = slot });
                return;
            }

            var count = wanted.Backends.Length;
            for (var i = 0; i < count; i++)
            {
                var slotKey = key with { Slot = checked((ushort)(i + 1)) };
                var value = ServiceValue.ForSlot(BackendId(wanted.Backends[i]));
                if (Services.TryGetValue(slotKey, out var old))
                {
                    if (old == value) continue;
                    Reference(old.BackendId, -1);
                }
                Reference(value.BackendId, +1);
                Services[slotKey] = value;
                _slots.Add(new ServiceUpdate(slotKey, value, wanted.Owner));
            }

            var revNat = hasMaster && current.RevNatId != 0 ? current.RevNatId : TakeRevNat();
            // The allowed prefixes before the master that asks for them (its flag), stale ones after it.
            _rangeOwnersTouched.Add(revNat);
            if (hasMaster) _rangeOwnersTouched.Add(current.RevNatId);
            foreach (var range in wanted.SourceRanges.IsDefault ? [] : wanted.SourceRanges)
            {
                var rangeKey = new SourceRange(revNat, range);
                _wantedRanges.Add(rangeKey);
                if (Ranges.Add(rangeKey)) _newRanges.Add(new SourceRangeUpdate(rangeKey, wanted.Owner));
            }
            var master = ServiceValue.Master(count, revNat, wanted.Flags, wanted.AffinityTimeout);
            if (!hasMaster || current != master)
            {
                Services[key] = master;
                _masters.Add(new ServiceUpdate(key, master, wanted.Owner));
            }
            foreach (var slot in present)
                if (slot > count) DeleteSlot(key with { Slot = slot });
        }

        /// <summary>Room for a cold sync's writes: <paramref name="entries"/> slots and masters, <paramref name="masters"/> of them masters.</summary>
        public void Reserve(int entries, int masters)
        {
            _newBackends.EnsureCapacity(entries - masters);
            _slots.EnsureCapacity(entries - masters);
            _masters.EnsureCapacity(masters);
        }

        /// <summary>
        /// <see cref="Reconcile"/> of a full sync over empty maps (<see cref="FromMaps"/>' tables are Dictionaries then): the
        /// key holds nothing yet, so its slots and master are written without looking them up first (a cold sync of
        /// 10,000 × 10 spared ~200,000 lookups), and a backend's id is found or taken in one lookup.
        /// </summary>
        public void Add(ServiceKey key, Frontend wanted)
        {
            var services = (Dictionary<ServiceKey, ServiceValue>)Services;
            var ids = (Dictionary<Backend, uint>)BackendIds;
            var references = (Dictionary<uint, int>)References;
            var count = wanted.Backends.Length;
            for (var i = 0; i < count; i++)
            {
                var backend = wanted.Backends[i];
                ref var id = ref CollectionsMarshal.GetValueRefOrAddDefault(ids, backend, out var known);
                if (!known)
                {
                    (id, BackendPool) = BackendPool.Take();
                    Backends.Add(id, backend);
                    _newBackends.Add(new BackendUpdate(id, backend));
                }
                var value = ServiceValue.ForSlot(id);
                CollectionsMarshal.GetValueRefOrAddDefault(references, value.BackendId, out _)++;
                var slotKey = key with { Slot = checked((ushort)(i + 1)) };
                services.Add(slotKey, value);
                _slots.Add(new ServiceUpdate(slotKey, value, wanted.Owner));
            }
            var revNat = TakeRevNat();
            foreach (var range in wanted.SourceRanges.IsDefault ? [] : wanted.SourceRanges)
            {
                var rangeKey = new SourceRange(revNat, range);
                _wantedRanges.Add(rangeKey);
                if (Ranges.Add(rangeKey)) _newRanges.Add(new SourceRangeUpdate(rangeKey, wanted.Owner));
            }
            var master = ServiceValue.Master(count, revNat, wanted.Flags, wanted.AffinityTimeout);
            services.Add(key, master);
            _masters.Add(new ServiceUpdate(key, master, wanted.Owner));
        }

        public ImmutableArray<MapWrite> Writes()
        {
            var deletes = new List<MapWrite>();
            foreach (var id in _maybeUnreferenced.Order())
            {
                if (References.TryGetValue(id, out var referenced) && referenced > 0 || !Backends.TryGetValue(id, out var backend)) continue;
                deletes.Add(new BackendDelete(id));
                Backends.Remove(id);
                References.Remove(id);
                if (BackendIds.TryGetValue(backend, out var mapped) && mapped == id) BackendIds.Remove(backend);
                BackendPool = BackendPool.Release(id);
            }
            var staleRanges = Ranges
                .Where(k => (_allRangesTouched || _rangeOwnersTouched.Contains(k.RevNatId)) && !_wantedRanges.Contains(k))
                .Order(SourceRangeComparer.Instance)
                .ToList();
            foreach (var key in staleRanges) Ranges.Remove(key);
            return [.. _newBackends, .. _slots, .. _newRanges, .. _masters, .. _staleSlots, .. staleRanges.Select(k => new SourceRangeDelete(k)), .. deletes];
        }

        public EbpfPlannerState State() => new(
            new EbpfMapContents(Freeze(Services), Freeze(Backends)) { SourceRanges = Ranges.ToImmutable() },
            Freeze(Ports),
            Freeze(Claims),
            Freeze(BackendIds),
            Freeze(References),
            BackendPool,
            RevNatPool);

        /// <summary>
        /// A map's table for a full sync: a Dictionary when the maps hold less than half of what is wanted (a cold start
        /// writes nearly everything), else an overlay builder over what they hold (a restart or resync changes little).
        /// </summary>
        private static IDictionary<TKey, TValue> Table<TKey, TValue>(OverlayTable<TKey, TValue> held, int wantedEntries)
            where TKey : notnull
        {
            if (held.Count * 2L >= wantedEntries) return held.ToBuilder();
            var table = new Dictionary<TKey, TValue>(Math.Max(held.Count, wantedEntries));
            foreach (var (key, value) in held) table.Add(key, value);
            return table;
        }

        /// <summary>
        /// A builder's overlay frozen (O(1) but for a fold), or a full sync's Dictionary as the new base, as it is: the
        /// planner drops this Work, so nothing writes to it again.
        /// </summary>
        private static OverlayTable<TKey, TValue> Freeze<TKey, TValue>(IDictionary<TKey, TValue> table)
            where TKey : notnull =>
            table is OverlayTable<TKey, TValue>.Builder builder ? builder.ToImmutable() : OverlayTable<TKey, TValue>.Over((Dictionary<TKey, TValue>)table);

        private void DeleteSlot(ServiceKey slotKey)
        {
            if (!Services.TryGetValue(slotKey, out var old)) return;
            _staleSlots.Add(new ServiceDelete(slotKey));
            Services.Remove(slotKey);
            Reference(old.BackendId, -1);
        }

        private uint BackendId(Backend backend)
        {
            if (BackendIds.TryGetValue(backend, out var id) && Backends.ContainsKey(id)) return id;
            (id, BackendPool) = BackendPool.Take();
            BackendIds[backend] = id;
            Backends[id] = backend;
            _newBackends.Add(new BackendUpdate(id, backend));
            return id;
        }

        private uint TakeRevNat()
        {
            (var id, RevNatPool) = RevNatPool.Take();
            return id;
        }

        private void Reference(uint id, int delta)
        {
            var count = (References.TryGetValue(id, out var before) ? before : 0) + delta;
            if (count <= 0)
            {
                References.Remove(id);
                _maybeUnreferenced.Add(id);
            }
            else References[id] = count;
        }
    }

    private sealed class FrontendComparer : IComparer<Frontend>
    {
        public static FrontendComparer Instance { get; } = new();

        public int Compare(Frontend? x, Frontend? y) => ServiceKeyComparer.Instance.Compare(x!.Key, y!.Key);
    }
}

/// <summary>Orders source ranges: reverse-NAT id, then the prefix (IPv4 before IPv6, address bytes, length).</summary>
public sealed class SourceRangeComparer : IComparer<SourceRange>
{
    public static SourceRangeComparer Instance { get; } = new();

    public int Compare(SourceRange x, SourceRange y)
    {
        var c = x.RevNatId.CompareTo(y.RevNatId);
        return c != 0 ? c : ComparePrefixes(x.Prefix, y.Prefix);
    }

    public static int ComparePrefixes(IpPrefix x, IpPrefix y)
    {
        var c = x.Family.CompareTo(y.Family);
        if (c != 0) return c;
        if ((c = x.Address.GetAddressBytes().AsSpan().SequenceCompareTo(y.Address.GetAddressBytes())) != 0) return c;
        return x.Length.CompareTo(y.Length);
    }
}

/// <summary>Orders service keys as a reader expects: address, port, protocol, scope, slot (host order).</summary>
public sealed class ServiceKeyComparer : IComparer<ServiceKey>
{
    public static ServiceKeyComparer Instance { get; } = new();

    public int Compare(ServiceKey x, ServiceKey y)
    {
        var c = CompareAddresses(x.Address, y.Address);
        if (c != 0) return c;
        if ((c = MapLayout.HostPort(x.Port).CompareTo(MapLayout.HostPort(y.Port))) != 0) return c;
        if ((c = x.Proto.CompareTo(y.Proto)) != 0) return c;
        if ((c = x.Scope.CompareTo(y.Scope)) != 0) return c;
        return x.Slot.CompareTo(y.Slot);
    }

    /// <summary>Two map addresses as their network-order bytes compare (word by word, each read big-endian).</summary>
    public static int CompareAddresses(in MapAddress x, in MapAddress y)
    {
        var c = BigEndian(x.Word0).CompareTo(BigEndian(y.Word0));
        if (c != 0) return c;
        if ((c = BigEndian(x.Word1).CompareTo(BigEndian(y.Word1))) != 0) return c;
        if ((c = BigEndian(x.Word2).CompareTo(BigEndian(y.Word2))) != 0) return c;
        return BigEndian(x.Word3).CompareTo(BigEndian(y.Word3));
    }

    private static uint BigEndian(uint word) => BitConverter.IsLittleEndian ? BinaryPrimitives.ReverseEndianness(word) : word;
}

/// <summary>How plans and explanations print map entries.</summary>
public static class EbpfText
{
    public static string Protocol(byte proto) => proto switch { 6 => "tcp", 17 => "udp", 132 => "sctp", _ => $"proto {proto}" };

    /// <summary>
    /// <c>10.96.0.10:80/tcp</c>, <c>[fd00::10]:80/tcp</c>, <c>*:30080/tcp</c> (<c>[*]:30080/tcp</c> for IPv6) for a
    /// node port, with <c> external</c> for the external scope.
    /// </summary>
    public static string Frontend(ServiceKey key) =>
        $"{(!key.Address.IsUnspecified ? Endpoint(key.Address.ToIPAddress(), key.Port) : key.Address.IsIPv4 ? $"*:{MapLayout.HostPort(key.Port)}" : $"[*]:{MapLayout.HostPort(key.Port)}")}/{Protocol(key.Proto)}{(key.Scope == MapLayout.ScopeExternal ? " external" : "")}";

    /// <summary><c>10.0.0.1:80</c>, or <c>[fd00::1]:80</c>; the port in network order.</summary>
    public static string Endpoint(IPAddress address, ushort networkPort) =>
        address.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{address}]:{MapLayout.HostPort(networkPort)}" : $"{address}:{MapLayout.HostPort(networkPort)}";

    public static string Backend(Backend backend) =>
        $"{Endpoint(backend.Address.ToIPAddress(), backend.Port)}/{Protocol(backend.Proto)}";

    /// <summary><c> flags nodeport,drop timeout 10800</c>, or nothing without flags.</summary>
    public static string Flags(ServiceValue master)
    {
        if (master.Flags == 0) return "";
        var names = new List<string>();
        if ((master.Flags & MapLayout.ServiceFlagNodePort) != 0) names.Add("nodeport");
        if ((master.Flags & MapLayout.ServiceFlagExternal) != 0) names.Add("external");
        if ((master.Flags & MapLayout.ServiceFlagSourceRanges) != 0) names.Add("source-ranges");
        if ((master.Flags & MapLayout.ServiceFlagSourceRangesNode) != 0) names.Add("source-ranges-node");
        if ((master.Flags & MapLayout.ServiceFlagDrop) != 0) names.Add("drop");
        if ((master.Flags & MapLayout.ServiceFlagMasquerade) != 0) names.Add("masquerade");
        if ((master.Flags & MapLayout.ServiceFlagMasqueradeLocal) != 0) names.Add("masquerade-local");
        if ((master.Flags & MapLayout.ServiceFlagAffinity) != 0) names.Add("affinity");
        var text = " flags " + string.Join(',', names);
        return (master.Flags & MapLayout.ServiceFlagAffinity) != 0 ? $"{text} timeout {master.AffinityTimeout}" : text;
    }
}
