using System.Collections.Immutable;
using System.Globalization;
using System.Net;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Nftables;

/// <summary>A chain and the rules it holds.</summary>
public sealed record NftChainContent(NftChain Chain, EquatableArray<NftRule> Rules);

/// <summary>A set (or map) the planner fills itself, with its elements.</summary>
public sealed record NftSetContent(NftSet Set, EquatableArray<NftElement> Elements);

/// <summary>
/// What one service port owns in one family's table: its own chains and sets, and the elements it
/// wants in the shared maps (<c>service-ips</c>, <c>no-endpoint-services</c>, …).
/// </summary>
public sealed record NftPortObjects(EquatableArray<NftChainContent> Chains, EquatableArray<NftSetContent> Sets, EquatableArray<NftElement> Elements)
{
    /// <summary>The pools (their chains' names) whose endpoints are elements of <c>endpoint-slots</c>.</summary>
    public EquatableArray<string> SlotPools { get; init; } = EquatableArray<string>.Empty;

    public int RuleCount => Chains.Sum(c => c.Rules.Count);
    public int SetElementCount => Sets.Sum(s => s.Elements.Count);
}

/// <summary>An element's identity in a shared map: the map and the key.</summary>
public readonly record struct NftElementKey(string Set, string Key);

/// <summary>
/// What a service port's objects were built from: Core's state of the port (the same object Core keeps,
/// not a copy), its cluster IP in this family and the node network. A partial sync builds the port's
/// previous objects again from these (with the pool ids of the state), so the planner keeps no chain,
/// rule or element text between syncs.
/// </summary>
public readonly record struct NftPortSource(ServicePortState Port, IPAddress ClusterIP, NodeNetwork Network);

/// <summary>
/// What the planner remembers between syncs, so a partial sync can touch only changed service
/// ports: what each port's objects were built from (<see cref="NftPortSource"/>: the objects themselves
/// are built again when the port changes), and who claims each key of the shared verdict maps (two
/// services may claim the same external IP and port; the first in name order wins, as the first
/// matching iptables rule would, and the next one takes over when it goes). Elements that carry neither
/// a value nor a comment (<c>hairpin-endpoints</c>, <c>health-check-nodeports</c>) are the same whoever
/// claims them: only how many ports claim each is kept (<see cref="Counted"/>). <c>endpoint-slots-…</c>
/// elements are not kept at all: their keys lie in their pool's id range, so only the port owning the
/// pool can claim one.
/// </summary>
public sealed record NftPlannerState(
    ImmutableDictionary<ServicePortName, NftPortSource> Ports,
    ImmutableDictionary<NftElementKey, ImmutableSortedDictionary<ServicePortName, NftElement>> Claims,
    int FixedChains,
    int FixedRules,
    int FixedSets,
    int FixedElements)
{
    /// <summary>How many service ports want each element without value or comment (see the class summary).</summary>
    public ImmutableDictionary<NftElementKey, int> Counted { get; init; } = ImmutableDictionary<NftElementKey, int>.Empty;

    /// <summary>The id of each pool in <c>endpoint-slots</c> (see <see cref="NftablesPlanner.AssignPoolIds"/>).</summary>
    public ImmutableDictionary<string, uint> PoolIds { get; init; } = ImmutableDictionary<string, uint>.Empty;

    /// <summary>The service port each pool of <see cref="PoolIds"/> belongs to.</summary>
    public ImmutableDictionary<string, ServicePortName> PoolOwners { get; init; } = ImmutableDictionary<string, ServicePortName>.Empty;

    /// <summary>The protocol (tcp, udp, sctp) of each pool of <see cref="PoolIds"/>: its map is <c>endpoint-slots-PROTOCOL-XX</c>.</summary>
    public ImmutableDictionary<string, string> PoolProtocols { get; init; } = ImmutableDictionary<string, string>.Empty;

    /// <summary>The pool holding each id of <see cref="PoolIds"/> (the reverse map), so a partial sync reassigns only the ids its pools reach.</summary>
    public ImmutableDictionary<uint, string> PoolsById { get; init; } = ImmutableDictionary<uint, string>.Empty;

    /// <summary>How many pools use each <c>endpoint-slots-PROTOCOL-XX</c> map: a map goes when its last pool does.</summary>
    public ImmutableDictionary<(string Protocol, int Shard), int> ShardUse { get; init; } = ImmutableDictionary<(string Protocol, int Shard), int>.Empty;

    /// <summary>The sum of <see cref="NftPortTotals"/> over <see cref="Ports"/>, kept up to date by each sync instead of summed again.</summary>
    public NftPortTotals PortTotals { get; init; }
}

/// <summary>
/// Chains, rules, sets and set elements that service ports own, and their <c>endpoint-slots-…</c> elements:
/// summed once, then changed by each partial sync's ports only.
/// </summary>
public readonly record struct NftPortTotals(int Chains, int Rules, int Sets, int SetElements, int SlotElements)
{
    public static NftPortTotals Of(NftPortObjects? objects) =>
        objects is null ? default : new(objects.Chains.Count, objects.RuleCount, objects.Sets.Count, objects.SetElementCount, objects.Elements.Count(e => NftNames.IsEndpointSlotsMap(e.Set)));

    public static NftPortTotals operator +(NftPortTotals a, NftPortTotals b) =>
        new(a.Chains + b.Chains, a.Rules + b.Rules, a.Sets + b.Sets, a.SetElements + b.SetElements, a.SlotElements + b.SlotElements);

    public static NftPortTotals operator -(NftPortTotals a, NftPortTotals b) =>
        new(a.Chains - b.Chains, a.Rules - b.Rules, a.Sets - b.Sets, a.SetElements - b.SetElements, a.SlotElements - b.SlotElements);
}

/// <summary>Objects in one family's table after a sync, and what the sync wrote.</summary>
public readonly record struct NftCounts(int Chains, int Rules, int Sets, int Elements, int RulesWritten, int ElementsWritten)
{
    public static NftCounts operator +(NftCounts a, NftCounts b) =>
        new(a.Chains + b.Chains, a.Rules + b.Rules, a.Sets + b.Sets, a.Elements + b.Elements, a.RulesWritten + b.RulesWritten, a.ElementsWritten + b.ElementsWritten);
}

/// <summary>The planner's output: the transaction (its text is exactly what <c>nft -f -</c> gets), the state to remember, and counts.</summary>
public sealed record NftPlan(NftTransaction Transaction, NftPlannerState State, NftCounts Counts, bool Full)
{
    public override string ToString() => Transaction.ToString();
}

/// <summary>
/// Pure planner of the nftables data plane: DesiredState (+ changed service ports) → one atomic
/// transaction on the family's table <c>ip proxyplanes</c> / <c>ip6 proxyplanes</c>, in kube-proxy's
/// nftables layout. Frontends are data: elements of verdict maps keyed by address . protocol .
/// port. Each service port has its own chains (policy, external, firewall, one per endpoint).
/// Endpoints are chosen with plain rules <c>numgen random mod N == 0 goto endpoint-…</c>
/// (probability 1/N of those left, as iptables' statistic rules), never anonymous verdict maps,
/// which make large loads quadratic in the kernel (see the README).
/// </summary>
public sealed class NftablesPlanner
{
    private readonly IpFamily _family;
    private readonly string _table;
    private readonly string _mark;
    private readonly string _ip;
    private readonly string _addrType;

    public NftablesPlanner(IpFamily family, string table = NftNames.Table, int masqueradeBit = 14)
    {
        _family = family;
        _table = table;
        _mark = "0x" + (1 << masqueradeBit).ToString("x", CultureInfo.InvariantCulture);
        _ip = Nft.FamilyKeyword(family);
        _addrType = family == IpFamily.IPv4 ? "ipv4_addr" : "ipv6_addr";
        _slotsMap = new NftMap(NftNames.EndpointSlotsMap("tcp", 0))
        {
            Type = Types("integer"),
            ValueType = $"{_addrType} . inet_service",
            Flags = Types("interval"),
            KeyTypeof = $"numgen random mod {SlotsPerPool}",
            ValueTypeof = $"{_ip} daddr . tcp dport",
            Comment = "pool id . slot: endpoint address . port",
        };
        _hairpinSet = new NftSet(NftNames.HairpinEndpoints) { Type = Types(_addrType, _addrType), Comment = "endpoint . endpoint: a pod reaching itself through a service" };
        _slotTypes = _slotsMap.ElementTypes;
        _hairpinTypes = NftElementTypes.Of(_hairpinSet);
        _ipPortTypes = new NftElementTypes(Types(_addrType, "inet_proto", "inet_service"), "verdict", false);
        _portTypes = new NftElementTypes(Types("inet_proto", "inet_service"), "verdict", false);
    }

    /// <summary>The definition of every <c>endpoint-slots-PROTOCOL-XX</c> map (named after tcp shard 00 here).</summary>
    private readonly NftMap _slotsMap;

    private NftMap SlotsMap((string Protocol, int Shard) shard) => _slotsMap with
    {
        Name = NftNames.EndpointSlotsMap(shard.Protocol, (uint)shard.Shard),
        ValueTypeof = $"{_ip} daddr . {shard.Protocol} dport",
    };

    /// <summary>The <c>endpoint-slots-PROTOCOL-XX</c> map a pool's id puts it in.</summary>
    private static (string Protocol, int Shard) ShardOf(string protocol, uint id) => (protocol, (int)(id % NftNames.EndpointSlotMaps));

    /// <summary>How many pools use each <c>endpoint-slots-PROTOCOL-XX</c> map.</summary>
    private static ImmutableDictionary<(string Protocol, int Shard), int> ShardUse(ImmutableDictionary<string, uint> poolIds, ImmutableDictionary<string, string> protocols)
    {
        var use = new Dictionary<(string, int), int>();
        foreach (var (pool, id) in poolIds) use[ShardOf(protocols[pool], id)] = use.GetValueOrDefault(ShardOf(protocols[pool], id)) + 1;
        return use.ToImmutableDictionary();
    }
    private readonly NftSet _hairpinSet;
    private readonly NftElementTypes _slotTypes, _hairpinTypes, _ipPortTypes, _portTypes;
    private static readonly NftElementTypes HealthCheckTypes = new(Types("inet_service"), null, false);

    /// <summary>
    /// Each pool (the endpoints of a service port's Cluster or Local spread) owns this many
    /// consecutive keys of <c>endpoint-slots</c>, from <c>id × SlotsPerPool</c>; its n endpoints
    /// take n intervals of them, as equal as the count allows (4096 / 3 = 1366, 1365, 1365: a skew
    /// under 0.1 %). The rule <c>dnat to numgen random mod 4096 offset ID×4096 map @endpoint-slots</c>
    /// never changes with the endpoints, so an endpoint change is element changes only, with no
    /// verdict: the kernel does not re-validate the table's chains for it. A pool of more than 4096
    /// endpoints uses its first 4096.
    /// </summary>
    public const int SlotsPerPool = 4096;

    /// <summary>Pool ids: 20 bits (2^32 / <see cref="SlotsPerPool"/>).</summary>
    public const uint PoolIdCount = 1u << 20;

    /// <summary>
    /// The id of each pool: a hash of its chain name, and on a collision the next free id, taking the
    /// pools in name order. So the ids depend only on which pools exist, never on the order of syncs
    /// (a partial sync leaves exactly what a full sync would write).
    /// </summary>
    public static ImmutableDictionary<string, uint> AssignPoolIds(IEnumerable<string> pools) => AssignPoolIds(pools, PoolHash, PoolIdCount);

    /// <summary><see cref="AssignPoolIds(IEnumerable{string})"/> with another hash and id space (tests force collisions with a small one).</summary>
    internal static ImmutableDictionary<string, uint> AssignPoolIds(IEnumerable<string> pools, Func<string, uint> hash, uint idCount)
    {
        var ids = ImmutableDictionary.CreateBuilder<string, uint>(StringComparer.Ordinal);
        var taken = new HashSet<uint>();
        foreach (var pool in pools.Order(StringComparer.Ordinal))
        {
            var id = hash(pool);
            while (!taken.Add(id)) id = (id + 1) % idCount;
            ids[pool] = id;
        }
        return ids.ToImmutable();
    }

    /// <summary>
    /// <see cref="AssignPoolIds"/> of the pools after <paramref name="removed"/> went and <paramref name="added"/>
    /// came, without walking every pool. An id is the pool's hash or the first free id after it (taking the pools
    /// in name order), so only pools in a run of consecutive taken ids that a removed id or an added hash falls
    /// in can move; they are placed again, in name order, around the ids of all other pools. When one of them
    /// ends up just before another run, pools after it in name order could have probed into that run, so the
    /// run joins and they are placed again. Returns the pools whose id changed or is new.
    /// </summary>
    internal static List<string> ReassignPoolIds(
        ref ImmutableDictionary<string, uint> ids, ref ImmutableDictionary<uint, string> pools,
        IReadOnlyCollection<string> removed, IReadOnlyCollection<string> added, Func<string, uint> hash, uint idCount)
    {
        var (oldIds, oldPools) = (ids, pools);
        uint Next(uint id) => (id + 1) % idCount;
        uint Previous(uint id) => (id + idCount - 1) % idCount;
        var affected = new HashSet<string>(StringComparer.Ordinal);
        var runs = new HashSet<uint>();
        bool TakeRun(uint id)
        {
            if (!oldPools.ContainsKey(id)) return false;
            var start = id;
            for (var n = 0u; n < idCount && oldPools.ContainsKey(Previous(start)); n++) start = Previous(start);
            if (!runs.Add(start)) return false;
            var at = start;
            for (var n = 0u; n < idCount && oldPools.TryGetValue(at, out var pool); n++, at = Next(at)) affected.Add(pool);
            return true;
        }
        foreach (var pool in removed) TakeRun(oldIds[pool]);
        foreach (var pool in added) TakeRun(hash(pool));
        while (true)
        {
            var newIds = oldIds.ToBuilder();
            var newPools = oldPools.ToBuilder();
            foreach (var pool in affected)
            {
                newPools.Remove(newIds[pool]);
                newIds.Remove(pool);
            }
            var grew = false;
            foreach (var pool in affected.Except(removed, StringComparer.Ordinal).Concat(added).Order(StringComparer.Ordinal))
            {
                var id = hash(pool);
                while (newPools.ContainsKey(id)) id = Next(id);
                newIds[pool] = id;
                newPools[id] = pool;
                if (oldPools.TryGetValue(Next(id), out var neighbour) && !affected.Contains(neighbour)) grew |= TakeRun(Next(id));
            }
            if (grew) continue;
            (ids, pools) = (newIds.ToImmutable(), newPools.ToImmutable());
            var finalIds = ids;
            return affected.Except(removed, StringComparer.Ordinal).Concat(added)
                .Where(p => !oldIds.TryGetValue(p, out var old) || old != finalIds[p]).ToList();
        }
    }

    /// <summary>The id a pool asks for first: FNV-1a of its name, folded into <see cref="PoolIdCount"/>.</summary>
    internal static uint PoolHash(string pool)
    {
        var hash = 2166136261u; // FNV-1a
        foreach (var c in pool) hash = (hash ^ c) * 16777619u;
        return (hash ^ (hash >> 20)) % PoolIdCount;
    }

    /// <summary>The pools of a port whose endpoints go into <c>endpoint-slots</c>: every pool in use without ClientIP affinity.</summary>
    private IEnumerable<string> SlotPools(ServicePortState port, PortNames names)
    {
        var verdict = port.VerdictFor(_family);
        if (verdict.AffinityTimeoutSeconds is not null) yield break;
        if (!verdict.ClusterEndpoints.IsEmpty) yield return names.ClusterPolicy;
        if (!verdict.LocalEndpoints.IsEmpty) yield return names.LocalPolicy;
    }

    public IpFamily Family => _family;

    /// <summary>
    /// Plans one sync. Full when <paramref name="request"/> says so or <paramref name="previous"/>
    /// is null (first sync, or after a failure): every object is (re)written, and what
    /// <paramref name="kernel"/> holds that is not wanted (or whose definition changed) is deleted.
    /// Otherwise partial: only the chains, sets and shared-map elements of changed service ports.
    /// </summary>
    public NftPlan Plan(SyncRequest request, NftPlannerState? previous, NftKernelState? kernel)
    {
        var full = request.Full || previous is null;
        return full ? PlanFull(request.State, kernel ?? NftKernelState.Empty) : PlanPartial(request, previous!);
    }

    // ---------------------------------------------------------------- full sync

    private NftPlan PlanFull(DesiredState state, NftKernelState kernel)
    {
        var network = state.Network;
        var (fixedChains, fixedMaps, fixedSets) = BuildFixed(network);

        var ports = ImmutableDictionary.CreateBuilder<ServicePortName, NftPortSource>();
        var inOrder = new List<NftPortObjects>(); // service port name order: the script is deterministic
        var claims = new Dictionary<NftElementKey, ImmutableSortedDictionary<ServicePortName, NftElement>>();
        var counted = ImmutableDictionary.CreateBuilder<NftElementKey, int>();
        var unclaimed = new List<(int Owner, NftElement Element)>(); // slot and counted elements, by the first claimant's place in name order
        var order = new Dictionary<ServicePortName, int>(state.ServicePorts.Count);
        var owners = ImmutableDictionary.CreateBuilder<string, ServicePortName>(StringComparer.Ordinal);
        var protocols = ImmutableDictionary.CreateBuilder<string, string>(StringComparer.Ordinal);
        var portNames = new Dictionary<ServicePortName, PortNames>(state.ServicePorts.Count);
        foreach (var (name, port) in state.ServicePorts)
            if (ClusterIPOf(port) is not null)
                foreach (var pool in SlotPools(port, portNames[name] = NftNames.ForPort(name)))
                {
                    owners[pool] = name;
                    protocols[pool] = NftNames.Protocol(port.Info.Protocol);
                }
        var poolIds = AssignPoolIds(owners.Keys);
        var poolProtocols = protocols.ToImmutable();
        var shardUse = ShardUse(poolIds, poolProtocols);
        var maps = fixedMaps.Concat(shardUse.Keys.Order().Select(SlotsMap)).ToList();
        foreach (var (name, port) in state.ServicePorts)
        {
            if (ClusterIPOf(port) is not { } clusterIP) continue;
            var objects = BuildPort(port, clusterIP, network, poolIds, portNames.GetValueOrDefault(name));
            ports[name] = new NftPortSource(port, clusterIP, network);
            var place = order[name] = inOrder.Count;
            inOrder.Add(objects);
            foreach (var element in objects.Elements)
            {
                switch (KindOf(element))
                {
                    case ClaimKind.Slot:
                        unclaimed.Add((place, element));
                        break;
                    case ClaimKind.Counted:
                        var key = KeyOf(element);
                        var count = counted.GetValueOrDefault(key);
                        if (count == 0) unclaimed.Add((place, element));
                        counted[key] = count + 1;
                        break;
                    default:
                        AddClaim(claims, name, element);
                        break;
                }
            }
        }

        var chains = fixedChains.Concat(inOrder.SelectMany(p => p.Chains)).ToList();
        var sets = fixedSets.Concat(inOrder.SelectMany(p => p.Sets)).ToList();
        var tx = new NftTransaction(_family, _table);
        tx.Add(new NftTable { Comment = "rules for proxyplanes" });

        // Declare (and empty) what is wanted; what exists with another definition is deleted
        // (replaced: the kernel object) and added again after every deletion (recreate).
        List<NftObject> replaced = [], recreate = [];
        foreach (var content in chains)
        {
            var chain = content.Chain;
            if (kernel.Chains.TryGetValue(chain.Name, out var existing))
            {
                if (existing.Base != chain.Base)
                {
                    // Emptied now (what it jumps to may be going too), deleted and re-added below.
                    tx.Flush(existing);
                    replaced.Add(existing);
                    recreate.Add(chain);
                    continue;
                }
                tx.Add(chain).Flush(chain);
            }
            else tx.Add(chain);
        }
        var wantedChains = chains.Select(c => c.Chain.Name).ToHashSet(StringComparer.Ordinal);
        var staleChains = kernel.Chains.Keys.Where(c => !wantedChains.Contains(c)).Order(StringComparer.Ordinal).ToList();
        // Stale chains are emptied first, so nothing they jump to is still referenced when deleting.
        foreach (var chain in staleChains) tx.Flush(new NftChain(chain));

        // Sets and maps share one namespace: a set where a map is wanted (or the reverse) is stale
        // and deleted below, and the wanted object added after it.
        foreach (var map in maps)
        {
            if (kernel.Maps.TryGetValue(map.Name, out var existing))
            {
                if (existing.SameDefinition(map)) tx.Add(map).Flush(map);
                else { replaced.Add(existing); recreate.Add(map); }
            }
            else if (kernel.Sets.ContainsKey(map.Name)) recreate.Add(map);
            else tx.Add(map);
        }
        foreach (var content in sets)
        {
            var set = content.Set;
            if (kernel.Sets.TryGetValue(set.Name, out var existing))
            {
                if (!existing.SameDefinition(set)) { replaced.Add(existing); recreate.Add(set); continue; }
                tx.Add(set);
                // Affinity sets keep what they learnt: clients stay on their endpoints across full syncs.
                if (!IsDynamic(set)) tx.Flush(set);
            }
            else if (kernel.Maps.ContainsKey(set.Name)) recreate.Add(set);
            else tx.Add(set);
        }

        // Deletions: maps and sets first (their elements and the rules using them are gone by now), then chains.
        var wantedMaps = maps.Select(m => m.Name).ToHashSet(StringComparer.Ordinal);
        var wantedSets = sets.Select(s => s.Set.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var map in kernel.Maps.Keys.Where(m => !wantedMaps.Contains(m)).Order(StringComparer.Ordinal)) tx.Delete(new NftMap(map));
        foreach (var set in kernel.Sets.Keys.Where(s => !wantedSets.Contains(s)).Order(StringComparer.Ordinal)) tx.Delete(new NftSet(set));
        foreach (var obj in replaced.Where(o => o is not NftChain)) tx.Delete(obj);
        foreach (var chain in staleChains) tx.Delete(new NftChain(chain));
        foreach (var obj in replaced.Where(o => o is NftChain)) tx.Delete(obj);
        foreach (var obj in recreate) tx.Add(obj);

        foreach (var content in chains)
            foreach (var rule in content.Rules) tx.Add(rule);
        foreach (var content in sets)
            foreach (var element in content.Elements) tx.Add(element);
        foreach (var element in Winners(claims, unclaimed, order)) tx.Add(element);

        var newState = new NftPlannerState(ports.ToImmutable(), claims.ToImmutableDictionary(),
            fixedChains.Count, fixedChains.Sum(c => c.Rules.Count), fixedMaps.Count + fixedSets.Count, fixedSets.Sum(s => s.Elements.Count))
        {
            Counted = counted.ToImmutable(),
            PoolIds = poolIds, PoolOwners = owners.ToImmutable(), PoolProtocols = poolProtocols,
            PoolsById = poolIds.ToImmutableDictionary(p => p.Value, p => p.Key), ShardUse = shardUse,
            PortTotals = inOrder.Aggregate(default(NftPortTotals), (sum, p) => sum + NftPortTotals.Of(p)),
        };
        return new NftPlan(tx, newState, CountsOf(newState, tx), Full: true);
    }

    // ---------------------------------------------------------------- partial sync

    private NftPlan PlanPartial(SyncRequest request, NftPlannerState previous)
    {
        var network = request.State.Network;
        var ports = previous.Ports.ToBuilder();
        var claims = previous.Claims.ToBuilder();
        var counted = previous.Counted.ToBuilder();
        // Slot and counted elements of the changed ports, before and after: the only places their previous
        // and new elements can come from (see NftPlannerState).
        Dictionary<NftElementKey, NftElement> oldUnclaimed = [], newUnclaimed = [];
        var affected = new SortedSet<NftElementKey>(Comparer<NftElementKey>.Create((a, b) =>
        {
            var c = string.CompareOrdinal(a.Set, b.Set);
            return c != 0 ? c : string.CompareOrdinal(a.Key, b.Key);
        }));

        var tx = new NftTransaction(_family, _table);
        List<NftChainContent> rewrite = [];
        List<NftSetContent> refill = [];
        List<NftObject> deleteSets = [], deleteChains = [], addSets = [];

        // Pool ids depend on which pools exist (colliding hashes are resolved in name order): when
        // the changed ports add or drop a pool, every port whose pool moved is rewritten too.
        var changed = new SortedSet<ServicePortName>(request.ChangedPorts);
        var owners = previous.PoolOwners.ToBuilder();
        var protocols = previous.PoolProtocols.ToBuilder();
        var touchedPools = new HashSet<string>(StringComparer.Ordinal);
        foreach (var name in changed)
        {
            if (previous.Ports.TryGetValue(name, out var was))
                foreach (var pool in SlotPools(was.Port, NftNames.ForPort(name)))
                {
                    owners.Remove(pool);
                    protocols.Remove(pool);
                    touchedPools.Add(pool);
                }
            if (request.State.ServicePorts.TryGetValue(name, out var now) && ClusterIPOf(now) is not null)
                foreach (var pool in SlotPools(now, NftNames.ForPort(name)))
                {
                    owners[pool] = name;
                    protocols[pool] = NftNames.Protocol(now.Info.Protocol);
                    touchedPools.Add(pool);
                }
        }
        var poolProtocols = protocols.ToImmutable();
        var (poolIds, poolsById, shardUse) = (previous.PoolIds, previous.PoolsById, previous.ShardUse);
        SortedSet<(string, int)> addShards = [], deleteShards = [];
        var removedPools = touchedPools.Where(p => !owners.ContainsKey(p)).ToList();
        var addedPools = touchedPools.Where(p => !previous.PoolOwners.ContainsKey(p)).ToList();
        if (removedPools.Count > 0 || addedPools.Count > 0)
        {
            // Only the pools whose id moves (those in the same run of taken ids) are rewritten.
            var moved = ReassignPoolIds(ref poolIds, ref poolsById, removedPools, addedPools, PoolHash, PoolIdCount);
            var use = shardUse.ToBuilder();
            void Use((string, int) shard, int delta)
            {
                var count = use.GetValueOrDefault(shard) + delta;
                if (count == 0) use.Remove(shard);
                else use[shard] = count;
            }
            foreach (var pool in removedPools) Use(ShardOf(previous.PoolProtocols[pool], previous.PoolIds[pool]), -1);
            foreach (var pool in moved)
            {
                if (previous.PoolIds.TryGetValue(pool, out var old))
                {
                    Use(ShardOf(previous.PoolProtocols[pool], old), -1);
                    changed.Add(owners[pool]);
                }
                Use(ShardOf(poolProtocols[pool], poolIds[pool]), +1);
            }
            foreach (var shard in use.Keys) if (!shardUse.ContainsKey(shard)) addShards.Add(shard);
            foreach (var shard in shardUse.Keys) if (!use.ContainsKey(shard)) deleteShards.Add(shard);
            shardUse = use.ToImmutable();
        }
        foreach (var shard in addShards) tx.Add(SlotsMap(shard));

        var totals = previous.PortTotals;
        foreach (var name in changed)
        {
            // The port's objects as the previous sync built them: the same inputs and pool ids give the same objects.
            var before = previous.Ports.TryGetValue(name, out var source)
                ? BuildPort(source.Port, source.ClusterIP, source.Network, previous.PoolIds)
                : null;
            NftPortObjects? after = null;
            if (request.State.ServicePorts.TryGetValue(name, out var port) && ClusterIPOf(port) is { } clusterIP)
            {
                after = BuildPort(port, clusterIP, network, poolIds);
                ports[name] = new NftPortSource(port, clusterIP, network);
            }
            else ports.Remove(name);
            if (before is null && after is null) continue;

            // Sets first: a set that is deleted or recreated forces a rewrite of the chains using it.
            var oldSets = (before?.Sets ?? EquatableArray<NftSetContent>.Empty).ToDictionary(s => s.Set.Name, StringComparer.Ordinal);
            var replacedSets = new HashSet<string>(StringComparer.Ordinal);
            foreach (var content in after?.Sets ?? EquatableArray<NftSetContent>.Empty)
            {
                if (oldSets.Remove(content.Set.Name, out var old))
                {
                    if (!old.Set.SameDefinition(content.Set))
                    {
                        // E.g. a new affinity timeout.
                        deleteSets.Add(old.Set);
                        addSets.Add(content.Set);
                        refill.Add(content);
                        replacedSets.Add(content.Set.Name);
                    }
                    else if (!old.Elements.Equals(content.Elements))
                    {
                        tx.Flush(content.Set);
                        refill.Add(content);
                    }
                    continue;
                }
                tx.Add(content.Set);
                refill.Add(content);
            }
            foreach (var gone in oldSets.Values)
            {
                deleteSets.Add(gone.Set);
                replacedSets.Add(gone.Set.Name);
            }

            var oldChains = (before?.Chains ?? EquatableArray<NftChainContent>.Empty).ToDictionary(c => c.Chain.Name, StringComparer.Ordinal);
            foreach (var content in after?.Chains ?? EquatableArray<NftChainContent>.Empty)
            {
                if (oldChains.Remove(content.Chain.Name, out var old))
                {
                    // Unchanged chains stay in the kernel untouched.
                    if (old == content && !old.Rules.Any(r => r.SetReferences.Any(replacedSets.Contains))) continue;
                    tx.Add(content.Chain).Flush(content.Chain);
                }
                else tx.Add(content.Chain);
                rewrite.Add(content);
            }
            foreach (var gone in oldChains.Values)
            {
                tx.Flush(gone.Chain);
                deleteChains.Add(gone.Chain);
            }

            foreach (var element in before?.Elements ?? EquatableArray<NftElement>.Empty)
            {
                var key = KeyOf(element);
                affected.Add(key);
                switch (KindOf(element))
                {
                    case ClaimKind.Slot:
                        oldUnclaimed[key] = element;
                        break;
                    case ClaimKind.Counted:
                        oldUnclaimed[key] = element;
                        var count = counted[key] - 1;
                        if (count == 0) counted.Remove(key);
                        else counted[key] = count;
                        break;
                    default:
                        var remaining = claims[key].Remove(name);
                        if (remaining.IsEmpty) claims.Remove(key);
                        else claims[key] = remaining;
                        break;
                }
            }
            foreach (var element in after?.Elements ?? EquatableArray<NftElement>.Empty)
            {
                var key = KeyOf(element);
                affected.Add(key);
                switch (KindOf(element))
                {
                    case ClaimKind.Slot:
                        newUnclaimed[key] = element;
                        break;
                    case ClaimKind.Counted:
                        newUnclaimed[key] = element;
                        counted[key] = counted.GetValueOrDefault(key) + 1;
                        break;
                    default:
                        AddClaim(claims, name, element);
                        break;
                }
            }

            totals = totals - NftPortTotals.Of(before) + NftPortTotals.Of(after);
        }

        // Elements whose winning value changed: old ones out (before the chains they point to go), new ones in at the end.
        List<NftElement> addElements = [];
        foreach (var key in affected)
        {
            NftElement? was, now;
            if (NftNames.IsEndpointSlotsMap(key.Set))
                (was, now) = (oldUnclaimed.GetValueOrDefault(key), newUnclaimed.GetValueOrDefault(key));
            else if (previous.Counted.ContainsKey(key) || counted.ContainsKey(key))
                // The same element whoever claims it: it goes when its last claimant does, comes with its first.
                (was, now) = (previous.Counted.ContainsKey(key) ? oldUnclaimed.GetValueOrDefault(key) ?? newUnclaimed[key] : null,
                              counted.ContainsKey(key) ? newUnclaimed.GetValueOrDefault(key) ?? oldUnclaimed[key] : null);
            else
            {
                was = previous.Claims.TryGetValue(key, out var oldClaims) ? oldClaims.First().Value : null;
                now = claims.TryGetValue(key, out var newClaims) ? newClaims.First().Value : null;
            }
            if (was is not null && now is not null && was.Value == now.Value && was.Comment == now.Comment) continue;
            if (was is not null) tx.Delete(new NftElement(was.Set, was.Key));
            if (now is not null) addElements.Add(now);
        }
        foreach (var set in deleteSets) tx.Delete(set);
        foreach (var shard in deleteShards) tx.Delete(new NftMap(SlotsMap(shard).Name));
        foreach (var chain in deleteChains) tx.Delete(chain);
        foreach (var set in addSets) tx.Add(set);
        foreach (var content in rewrite)
            foreach (var rule in content.Rules) tx.Add(rule);
        foreach (var content in refill)
            foreach (var element in content.Elements) tx.Add(element);
        foreach (var element in addElements.OrderBy(e => SetOrder(e.Set)).ThenBy(e => e.Set, StringComparer.Ordinal)) tx.Add(element);

        var newState = previous with
        {
            Ports = ports.ToImmutable(), Claims = claims.ToImmutable(), Counted = counted.ToImmutable(), PoolIds = poolIds, PoolOwners = owners.ToImmutable(), PoolProtocols = poolProtocols,
            PoolsById = poolsById, ShardUse = shardUse, PortTotals = totals,
        };
        return new NftPlan(tx, newState, CountsOf(newState, tx), Full: false);
    }

    // O(1) in the number of service ports: the totals are kept in the state.
    private static NftCounts CountsOf(NftPlannerState state, NftTransaction tx) => new(
        Chains: state.FixedChains + state.PortTotals.Chains,
        Rules: state.FixedRules + state.PortTotals.Rules,
        Sets: state.FixedSets + state.ShardUse.Count + state.PortTotals.Sets,
        Elements: state.FixedElements + state.PortTotals.SetElements + state.PortTotals.SlotElements + state.Claims.Count + state.Counted.Count,
        RulesWritten: tx.RulesAdded,
        ElementsWritten: tx.ElementsAdded);

    private static NftElementKey KeyOf(NftElement element) => new(element.Set, element.KeyText);

    /// <summary>How the state keeps an element of a shared map (see <see cref="NftPlannerState"/>).</summary>
    private enum ClaimKind { Claimed, Counted, Slot }

    private static ClaimKind KindOf(NftElement element) =>
        NftNames.IsEndpointSlotsMap(element.Set) ? ClaimKind.Slot
        : element.Value is null && element.Comment is null ? ClaimKind.Counted
        : ClaimKind.Claimed;

    private static void AddClaim(IDictionary<NftElementKey, ImmutableSortedDictionary<ServicePortName, NftElement>> claims, ServicePortName owner, NftElement element)
    {
        var key = KeyOf(element);
        claims[key] = (claims.TryGetValue(key, out var existing) ? existing : ImmutableSortedDictionary<ServicePortName, NftElement>.Empty).SetItem(owner, element);
    }

    /// <summary>
    /// The winning element of every key (and the first claimant's of each unclaimed one), grouped by map (so they
    /// batch), in service port order (<paramref name="order"/>: each port's place in name order), then by key.
    /// </summary>
    private static IEnumerable<NftElement> Winners(Dictionary<NftElementKey, ImmutableSortedDictionary<ServicePortName, NftElement>> claims,
        List<(int Owner, NftElement Element)> unclaimed, Dictionary<ServicePortName, int> order)
    {
        var all = new (int SetOrder, string Set, int Owner, string Key, NftElement Element)[claims.Count + unclaimed.Count];
        var i = 0;
        foreach (var (key, claimants) in claims)
        {
            var (owner, element) = claimants.First();
            all[i++] = (SetOrder(key.Set), key.Set, order[owner], key.Key, element);
        }
        foreach (var (owner, element) in unclaimed) all[i++] = (SetOrder(element.Set), element.Set, owner, element.KeyText, element);
        Array.Sort(all, static (a, b) =>
        {
            var c = a.SetOrder.CompareTo(b.SetOrder);
            if (c == 0) c = string.CompareOrdinal(a.Set, b.Set);
            if (c == 0) c = a.Owner.CompareTo(b.Owner);
            return c != 0 ? c : string.CompareOrdinal(a.Key, b.Key);
        });
        return all.Select(w => w.Element);
    }

    private static readonly string[] SharedSets =
        [NftNames.ServiceIPs, NftNames.ServiceNodePorts, NftNames.FirewallIPs, NftNames.NoEndpointServices, NftNames.NoEndpointNodePorts, NftNames.HealthCheckNodePorts,
         NftNames.EndpointSlots, NftNames.HairpinEndpoints];

    private static int SetOrder(string set) => NftNames.IsEndpointSlotsMap(set) ? Array.IndexOf(SharedSets, NftNames.EndpointSlots) : Array.IndexOf(SharedSets, set);

    private static bool IsDynamic(NftSet set) => set.Flags.Contains("dynamic");

    private IPAddress? ClusterIPOf(ServicePortState port)
    {
        foreach (var ip in port.Info.ClusterIPs)
            if (NodeAddresses.FamilyOf(ip) == _family) return ip;
        return null;
    }

    // ---------------------------------------------------------------- fixed objects

    private (List<NftChainContent> Chains, List<NftMap> Maps, List<NftSetContent> Sets) BuildFixed(NodeNetwork network)
    {
        var chains = new List<NftChainContent>();
        void Chain(string name, NftBaseChain? hook, params string[] rules) =>
            chains.Add(new NftChainContent(new NftChain(name) { Base = hook }, new EquatableArray<NftRule>(rules.Select(r => new NftRule(name, r)))));

        // Filter chains see addresses before DNAT (priority dstnat - 10), except the one checking
        // output for services without endpoints, which must see the node's own short-circuited
        // traffic after DNAT (dstnat + 10).
        Chain(NftNames.FilterPrerouting, new("filter", "prerouting", -110), $"ct state new jump {NftNames.FirewallCheck}");
        Chain(NftNames.FilterInput, new("filter", "input", -110),
            $"ct state new jump {NftNames.EndpointsCheck}",
            $"tcp dport @{NftNames.HealthCheckNodePorts} accept");
        Chain(NftNames.FilterForward, new("filter", "forward", -110),
            "ct state invalid drop",
            $"ct state new jump {NftNames.EndpointsCheck}");
        Chain(NftNames.FilterOutput, new("filter", "output", -110), $"ct state new jump {NftNames.FirewallCheck}");
        Chain(NftNames.FilterOutputPostDnat, new("filter", "output", -90), $"ct state new jump {NftNames.EndpointsCheck}");
        Chain(NftNames.NatPrerouting, new("nat", "prerouting", -100), $"jump {NftNames.Services}");
        Chain(NftNames.NatOutput, new("nat", "output", -100), $"jump {NftNames.Services}");
        Chain(NftNames.NatPostrouting, new("nat", "postrouting", 100), $"jump {NftNames.Masquerading}");

        // Node ports: on every local address but loopback (localhost node ports would need
        // route_localnet), or on the --nodeport-addresses of this family.
        List<NftSetContent> sets = [];
        string nodePortMatch;
        if (network.NodePortAddresses is { } addresses)
        {
            nodePortMatch = $"{_ip} daddr @{NftNames.NodePortIPs}";
            var elements = addresses.Where(a => NodeAddresses.FamilyOf(a) == _family && !IPAddress.IsLoopback(a))
                .Select(a => new NftElement(NftNames.NodePortIPs, a.ToString()));
            sets.Add(new NftSetContent(new NftSet(NftNames.NodePortIPs) { Type = Types(_addrType), Comment = "node addresses that accept node ports" }, new EquatableArray<NftElement>(elements)));
        }
        else
            nodePortMatch = $"fib daddr type local {_ip} daddr != {(_family == IpFamily.IPv4 ? "127.0.0.0/8" : "::1")}";
        sets.Add(new NftSetContent(new NftSet(NftNames.HealthCheckNodePorts) { Type = Types("inet_service"), Comment = "health check node ports, accepted" }, EquatableArray<NftElement>.Empty));
        sets.Add(new NftSetContent(_hairpinSet, EquatableArray<NftElement>.Empty));

        var destination = $"{_ip} daddr . meta l4proto . th dport";
        Chain(NftNames.Services, null,
            $"{destination} vmap @{NftNames.ServiceIPs}",
            $"{nodePortMatch} meta l4proto . th dport vmap @{NftNames.ServiceNodePorts}");
        Chain(NftNames.EndpointsCheck, null,
            $"{destination} vmap @{NftNames.NoEndpointServices}",
            $"{nodePortMatch} meta l4proto . th dport vmap @{NftNames.NoEndpointNodePorts}");
        Chain(NftNames.FirewallCheck, null, $"{destination} vmap @{NftNames.FirewallIPs}");
        // REJECT refuses at once (ICMP port unreachable → connection refused) rather than letting clients time out.
        Chain(NftNames.RejectChain, null, "reject");
        Chain(NftNames.MarkForMasquerade, null, $"meta mark set meta mark | {_mark}");
        // Packets marked for masquerade get SNAT on the way out; the mark is cleared first so a
        // packet re-entering the stack is not masqueraded twice.
        // Hairpin: a pod reaching itself through a service must be masqueraded, or its reply would
        // skip the un-DNAT. After DNAT the packet's source and destination are then the same endpoint.
        Chain(NftNames.Masquerading, null,
            $"ct status dnat {_ip} saddr . {_ip} daddr @{NftNames.HairpinEndpoints} jump {NftNames.MarkForMasquerade}",
            $"meta mark & {_mark} == 0 return",
            $"meta mark set meta mark ^ {_mark}",
            "masquerade fully-random");
        chains.Add(new NftChainContent(
            new NftChain(NftNames.Canary) { Comment = "when its rule is gone, a full sync restores the table" },
            new EquatableArray<NftRule>([new NftRule(NftNames.Canary, "return")])));

        var ipPortType = Types(_addrType, "inet_proto", "inet_service");
        var portType = Types("inet_proto", "inet_service");
        List<NftMap> maps =
        [
            new(NftNames.ServiceIPs) { Type = ipPortType, ValueType = "verdict", Comment = "ClusterIP, ExternalIP and LoadBalancer IP traffic" },
            new(NftNames.ServiceNodePorts) { Type = portType, ValueType = "verdict", Comment = "NodePort traffic" },
            new(NftNames.NoEndpointServices) { Type = ipPortType, ValueType = "verdict", Comment = "drop or reject traffic to services without usable endpoints" },
            new(NftNames.NoEndpointNodePorts) { Type = portType, ValueType = "verdict", Comment = "drop or reject traffic to node ports without usable endpoints" },
            new(NftNames.FirewallIPs) { Type = ipPortType, ValueType = "verdict", Comment = "load balancer IPs restricted by loadBalancerSourceRanges" },
        ];
        return (chains, maps, sets);
    }

    private static EquatableArray<string> Types(params string[] types) => new(types);

    // ---------------------------------------------------------------- per service port

    /// <summary>
    /// One service port in this family: the verdicts Core decided for it, and how this planner names
    /// and renders them. Nothing here reads traffic policies.
    /// </summary>
    private sealed record PortShape(ServicePortInfo Info, PortNames Names, IPAddress ClusterIP, ServicePortVerdict Verdict)
    {
        public TrafficVerdict Internal => Verdict.InternalTraffic;
        public TrafficVerdict External => Verdict.ExternalTraffic;

        /// <summary>The spread over a pool: <c>service-…</c> (Cluster) or <c>local-…</c> (Local).</summary>
        public string PoolChain(EndpointPool pool) => pool == EndpointPool.Local ? Names.LocalPolicy : Names.ClusterPolicy;

        /// <summary>
        /// External traffic enters the port's chains unless it is rejected: when it is dropped, the
        /// short-circuit rules of the external chain still apply, and the rest meets the no-endpoint drop.
        /// </summary>
        public bool ExternalEntersNat => External.Action != TrafficAction.Reject;

        public bool UsesExternalChain => ExternalEntersNat && Info.HasExternalFrontends;

        /// <summary>The no-endpoint verdict of traffic that is not forwarded: REJECT when nothing can serve; DROP when only the Local policy keeps endpoints away.</summary>
        public static string FilterVerdict(TrafficVerdict verdict) => verdict.Action == TrafficAction.Drop ? "drop" : $"goto {NftNames.RejectChain}";
    }

    private NftPortObjects BuildPort(ServicePortState port, IPAddress clusterIP, NodeNetwork network, ImmutableDictionary<string, uint> poolIds, PortNames? names = null)
    {
        names ??= NftNames.ForPort(port.Info.Name);
        var verdict = port.VerdictFor(_family);
        var shape = new PortShape(port.Info, names, clusterIP, verdict);
        var info = shape.Info;
        var name = info.Name;
        var protocol = NftNames.Protocol(info.Protocol);
        var portText = info.Port.ToString(CultureInfo.InvariantCulture);
        var external = names.External;
        var detector = network.LocalDetector;

        List<NftElement> elements = [];
        void Element(string set, string value, string frontend, params string[] key) =>
            elements.Add(new NftElement(set, key)
            {
                Value = value,
                Comment = ElementComment(name, frontend),
                Types = set is NftNames.ServiceNodePorts or NftNames.NoEndpointNodePorts ? _portTypes : _ipPortTypes,
            });

        // Cluster IP.
        if (shape.Internal.IsForward) Element(NftNames.ServiceIPs, $"goto {shape.PoolChain(shape.Internal.Pool)}", ClusterIPComment, clusterIP.ToString(), protocol, portText);
        else Element(NftNames.NoEndpointServices, PortShape.FilterVerdict(shape.Internal), ClusterIPComment, clusterIP.ToString(), protocol, portText);

        // External IPs.
        foreach (var ip in OfFamily(info.ExternalIPs))
        {
            if (shape.ExternalEntersNat) Element(NftNames.ServiceIPs, $"goto {external}", ExternalIPComment, ip.ToString(), protocol, portText);
            if (!shape.External.IsForward) Element(NftNames.NoEndpointServices, PortShape.FilterVerdict(shape.External), ExternalIPComment, ip.ToString(), protocol, portText);
        }

        // Load-balancer IPs; with source ranges, the firewall chain drops other sources before DNAT.
        // Rejected traffic needs no firewall: nothing is DNATed for it.
        var lbIPs = OfFamily(info.LoadBalancerIPs).ToList();
        var usesFirewall = shape.ExternalEntersNat && lbIPs.Count > 0 && !verdict.SourceRanges.IsEmpty;
        foreach (var ip in lbIPs)
        {
            if (shape.ExternalEntersNat) Element(NftNames.ServiceIPs, $"goto {external}", LoadBalancerIPComment, ip.ToString(), protocol, portText);
            if (usesFirewall) Element(NftNames.FirewallIPs, $"goto {names.Firewall}", LoadBalancerIPComment, ip.ToString(), protocol, portText);
            if (!shape.External.IsForward) Element(NftNames.NoEndpointServices, PortShape.FilterVerdict(shape.External), LoadBalancerIPComment, ip.ToString(), protocol, portText);
        }

        // Node port.
        if (info.NodePort != 0)
        {
            var nodePort = info.NodePort.ToString(CultureInfo.InvariantCulture);
            if (shape.ExternalEntersNat) Element(NftNames.ServiceNodePorts, $"goto {external}", NodePortComment, protocol, nodePort);
            if (!shape.External.IsForward) Element(NftNames.NoEndpointNodePorts, PortShape.FilterVerdict(shape.External), NodePortComment, protocol, nodePort);
        }

        // The health check node port answers load balancers whatever the node's endpoints.
        if (info.HealthCheckNodePort != 0)
            elements.Add(new NftElement(NftNames.HealthCheckNodePorts, info.HealthCheckNodePort.ToString(CultureInfo.InvariantCulture)) { Types = HealthCheckTypes });

        List<NftChainContent> chains = [];
        List<NftSetContent> sets = [];
        List<NftRule> rules = [];
        void Rule(string chain, string text) => rules.Add(new NftRule(chain, text));
        void EndChain(string chain)
        {
            chains.Add(new NftChainContent(new NftChain(chain), new EquatableArray<NftRule>(rules)));
            rules.Clear();
        }

        // Off-cluster sources reaching a cluster IP are masqueraded, so replies come back through this node.
        var masqueradeRule = verdict.InternalMasquerade != SourceMasquerade.None;

        if (shape.UsesExternalChain)
        {
            if (verdict.ExternalMasquerade)
            {
                // Cluster policy may cross to another node: masquerade so the reply comes back here.
                Rule(external, $"jump {NftNames.MarkForMasquerade}");
            }
            else if (verdict.LocalShortCircuit != LocalShortCircuit.None)
            {
                // Local policy keeps the client's source. Pods reaching an external destination of
                // their own cluster are short-circuited to all endpoints, as if they had gone out to
                // the load balancer and come back; so is the node itself (masqueraded: the VIP may be local).
                if (verdict.LocalShortCircuit == LocalShortCircuit.PodsAndNode)
                    Rule(external, $"{IfLocal(detector)} goto {names.ClusterPolicy}");
                Rule(external, $"fib saddr type local jump {NftNames.MarkForMasquerade}");
                Rule(external, $"fib saddr type local goto {names.ClusterPolicy}");
            }
            if (shape.External.IsForward) Rule(external, $"goto {shape.PoolChain(shape.External.Pool)}");
            EndChain(external);
        }

        if (usesFirewall)
        {
            // loadBalancerSourceRanges: other sources are dropped (in filter-prerouting, before DNAT).
            var firewall = names.Firewall;
            var sourceSet = names.SourceRanges;
            var allowed = new List<IpPrefix>(verdict.SourceRanges);
            // A VIP-like load balancer IP is often local: a request from the node to it loops back
            // with the VIP as its source, which must be allowed when the node itself is.
            if (verdict.SourceRangesAllowNode)
                allowed.AddRange(lbIPs.Select(ip => new IpPrefix(ip, _family == IpFamily.IPv4 ? 32 : 128)));
            var setElements = Normalize(allowed).Select(p => new NftElement(sourceSet, PrefixText(p)));
            sets.Add(new NftSetContent(new NftSet(sourceSet) { Type = Types(_addrType), Flags = Types("interval") }, new EquatableArray<NftElement>(setElements)));
            Rule(firewall, $"{_ip} saddr != @{sourceSet} drop");
            EndChain(firewall);
        }

        // One spread per pool in use; the cluster IP's masquerade rule lives in its pool's chain.
        List<string> slotPools = [];
        void Pool(string chain, EndpointPool pool, EquatableArray<EndpointInfo> endpoints)
        {
            if (masqueradeRule && shape.Internal.Pool == pool) Rule(chain, MasqueradeRule(shape, protocol, network));
            if (verdict.AffinityTimeoutSeconds is null)
            {
                // Endpoints as data: the rule stays as long as the pool exists; its endpoints are elements.
                var id = poolIds[chain];
                slotPools.Add(chain);
                Rule(chain, $"meta l4proto {protocol} dnat {_ip} to numgen random mod {SlotsPerPool} offset {(long)id * SlotsPerPool} map @{NftNames.EndpointSlotsMap(protocol, id)}");
                elements.AddRange(SlotElements(id, protocol, endpoints));
            }
            else EndpointJumps(chain, names, verdict, endpoints, Rule);
            EndChain(chain);
        }
        if (!verdict.ClusterEndpoints.IsEmpty) Pool(names.ClusterPolicy, EndpointPool.Cluster, verdict.ClusterEndpoints);
        if (!verdict.LocalEndpoints.IsEmpty) Pool(names.LocalPolicy, EndpointPool.Local, verdict.LocalEndpoints);

        // ClientIP affinity keeps kube-proxy's rules: a chain and a dynamic set per endpoint, so a
        // client goes back to its endpoint for as long as that endpoint exists.
        if (verdict.AffinityTimeoutSeconds is { } timeout)
            foreach (var endpoint in verdict.Endpoints)
            {
                var chain = names.Endpoint(endpoint);
                // ClientIP affinity: remember which endpoint this client was sent to (refreshing the timeout).
                var affinity = names.Affinity(endpoint);
                sets.Add(new NftSetContent(new NftSet(affinity) { Type = Types(_addrType), Flags = Types("dynamic", "timeout"), TimeoutSeconds = timeout }, EquatableArray<NftElement>.Empty));
                Rule(chain, $"update @{affinity} {{ {_ip} saddr }}");
                Rule(chain, $"meta l4proto {protocol} dnat to {endpoint.Endpoint}");
                EndChain(chain);
            }

        // Hairpin (see the masquerading chain): each endpoint address once.
        foreach (var address in verdict.Endpoints.Select(e => e.Address).Distinct())
        {
            var text = address.ToString();
            elements.Add(new NftElement(NftNames.HairpinEndpoints, text, text) { Types = _hairpinTypes });
        }

        return new NftPortObjects(new EquatableArray<NftChainContent>(chains), new EquatableArray<NftSetContent>(sets), new EquatableArray<NftElement>(elements))
        {
            SlotPools = new EquatableArray<string>(slotPools),
        };
    }

    /// <summary>A pool's endpoints in <c>endpoint-slots</c>: endpoint i of n takes keys [id×4096 + ⌊4096·i/n⌋, id×4096 + ⌊4096·(i+1)/n⌋).</summary>
    private IEnumerable<NftElement> SlotElements(uint id, string protocol, EquatableArray<EndpointInfo> endpoints)
    {
        var count = Math.Min(endpoints.Count, SlotsPerPool);
        var first = (long)id * SlotsPerPool;
        for (var i = 0; i < count; i++)
        {
            var low = first + (long)SlotsPerPool * i / count;
            var high = first + (long)SlotsPerPool * (i + 1) / count - 1;
            var key = low == high ? low.ToString(CultureInfo.InvariantCulture) : string.Create(CultureInfo.InvariantCulture, $"{low}-{high}");
            var endpoint = endpoints[i];
            yield return new NftElement(NftNames.EndpointSlotsMap(protocol, id), key)
            {
                Value = string.Create(CultureInfo.InvariantCulture, $"{endpoint.Address} . {endpoint.Port}"),
                Types = _slotTypes,
            };
        }
    }

    private void EndpointJumps(string chain, PortNames names, ServicePortVerdict verdict, EquatableArray<EndpointInfo> endpoints, Action<string, string> rule)
    {
        // ClientIP affinity first: a client seen recently goes back to its endpoint.
        if (verdict.AffinityTimeoutSeconds is not null)
            foreach (var endpoint in endpoints)
                rule(chain, $"{_ip} saddr @{names.Affinity(endpoint)} goto {names.Endpoint(endpoint)}");
        // Random spread: endpoint i of n is taken with probability 1/(n-i) among those left.
        for (var i = 0; i < endpoints.Count; i++)
        {
            var left = endpoints.Count - i;
            var target = names.Endpoint(endpoints[i]);
            rule(chain, left > 1 ? $"numgen random mod {left} == 0 goto {target}" : $"goto {target}");
        }
    }

    // The frontend an element of a shared map is for, after its service port: "shop/web:http external IP".
    // (An external IP and a load-balancer IP are otherwise the same element; explain reads these.)
    public const string ClusterIPComment = "cluster IP";
    public const string ExternalIPComment = "external IP";
    public const string LoadBalancerIPComment = "loadbalancer IP";
    public const string NodePortComment = "node port";

    /// <summary>"ns/name:port frontend", the service port shortened with "..." when the comment would pass nft's 128 bytes.</summary>
    internal static string ElementComment(ServicePortName port, string frontend)
    {
        var service = port.ToString();
        var room = Nft.CommentLengthMax - frontend.Length - 1;
        if (service.Length > room) service = service[..(room - 3)] + "...";
        return $"{service} {frontend}";
    }

    private string MasqueradeRule(PortShape shape, string protocol, NodeNetwork network)
    {
        var match = $"{_ip} daddr {shape.ClusterIP} {protocol} dport {shape.Info.Port}";
        return shape.Verdict.InternalMasquerade == SourceMasquerade.AllSources
            ? $"{match} jump {NftNames.MarkForMasquerade}"
            : $"{match} {IfNotLocal(network.LocalDetector)} jump {NftNames.MarkForMasquerade}";
    }

    private string IfLocal(LocalTrafficDetector detector) => detector.Mode switch
    {
        LocalDetectMode.InterfaceNamePrefix => $"iifname \"{detector.Interface}*\"",
        LocalDetectMode.BridgeInterface => $"iifname \"{detector.Interface}\"",
        _ => $"{_ip} saddr {detector.Cidrs.First(c => c.Family == _family)}",
    };

    private string IfNotLocal(LocalTrafficDetector detector) => detector.Mode switch
    {
        LocalDetectMode.InterfaceNamePrefix => $"iifname != \"{detector.Interface}*\"",
        LocalDetectMode.BridgeInterface => $"iifname != \"{detector.Interface}\"",
        _ => $"{_ip} saddr != {detector.Cidrs.First(c => c.Family == _family)}",
    };

    private IEnumerable<IPAddress> OfFamily(EquatableArray<IPAddress> addresses) =>
        addresses.Where(a => NodeAddresses.FamilyOf(a) == _family);

    /// <summary>Interval sets refuse overlapping elements: keep each prefix not inside another, in address order.</summary>
    internal static List<IpPrefix> Normalize(IEnumerable<IpPrefix> prefixes)
    {
        var sorted = prefixes.Distinct().OrderBy(p => p.Length).ThenBy(p => p.Address, Comparer<IPAddress>.Create(CompareAddresses)).ToList();
        var kept = new List<IpPrefix>();
        foreach (var prefix in sorted)
            if (!kept.Any(k => k.Length <= prefix.Length && k.Contains(prefix.Address))) kept.Add(prefix);
        return kept.OrderBy(p => p.Address, Comparer<IPAddress>.Create(CompareAddresses)).ThenBy(p => p.Length).ToList();
    }

    private static string PrefixText(IpPrefix prefix) =>
        prefix.Length == (prefix.Family == IpFamily.IPv4 ? 32 : 128) ? prefix.Address.ToString() : prefix.ToString();

    private static int CompareAddresses(IPAddress a, IPAddress b)
    {
        Span<byte> x = stackalloc byte[16], y = stackalloc byte[16];
        a.TryWriteBytes(x, out var lx);
        b.TryWriteBytes(y, out var ly);
        return lx != ly ? lx.CompareTo(ly) : x[..lx].SequenceCompareTo(y[..ly]);
    }
}
