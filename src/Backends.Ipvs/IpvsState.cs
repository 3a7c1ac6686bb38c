using System.Collections.Immutable;
using System.Net;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Ipvs;

/// <summary>An entry of one of the helper ipsets, as <c>ipset save</c> prints it (<c>10.96.0.10,tcp:80</c>).</summary>
public readonly record struct IpsetEntry(string Set, string Entry) : IComparable<IpsetEntry>
{
    public int CompareTo(IpsetEntry other)
    {
        var c = IpvsPlanner.SetOrder(Set).CompareTo(IpvsPlanner.SetOrder(other.Set));
        return c != 0 ? c : string.CompareOrdinal(Entry, other.Entry);
    }

    public override string ToString() => $"{Set} {Entry}";
}

/// <summary>
/// A load-balancer frontend the node itself may not reach (its source ranges leave the node out):
/// dropped in KUBE-IPVS-OUT-FILTER, since IPVS steers the node's own traffic before the filter table.
/// </summary>
public readonly record struct OutFilterEntry(IPAddress Address, Protocol Protocol, int Port) : IComparable<OutFilterEntry>
{
    public IpFamily Family => NodeAddresses.FamilyOf(Address);

    public int CompareTo(OutFilterEntry other) => new VirtualServerKey(Address, Protocol, Port).CompareTo(new VirtualServerKey(other.Address, other.Protocol, other.Port));
}

/// <summary>A virtual server one service port wants, with its destinations (all of weight 1).</summary>
public sealed record DesiredServer(VirtualServer Definition, EquatableArray<RealServerKey> Destinations);

/// <summary>Everything one service port contributes: virtual servers, addresses to bind, ipset entries, out-filter drops.</summary>
public sealed record PortObjects(
    EquatableArray<DesiredServer> Servers,
    EquatableArray<IPAddress> Addresses,
    EquatableArray<IpsetEntry> Entries,
    EquatableArray<OutFilterEntry> OutFilter)
{
    public static PortObjects Empty { get; } = new(EquatableArray<DesiredServer>.Empty, EquatableArray<IPAddress>.Empty, EquatableArray<IpsetEntry>.Empty, EquatableArray<OutFilterEntry>.Empty);
}

/// <summary>A destination as the last sync left it: its weight, and since when it drains (weight 0, not wanted).</summary>
public sealed record AppliedDestination(int Weight, DateTimeOffset? DrainingSince = null);

/// <summary>A virtual server as the last sync left it in the kernel.</summary>
public sealed record AppliedServer(VirtualServer Definition, ImmutableSortedDictionary<RealServerKey, AppliedDestination> Destinations)
{
    /// <summary>How many of its destinations drain (counted once, when it is made).</summary>
    public int DrainingCount { get; } = Destinations.Values.Count(d => d.DrainingSince is not null);

    public bool HasDraining => DrainingCount > 0;
}

/// <summary>
/// What the logs read of the kernel the planner left (destinations, draining ones) and which virtual
/// servers have draining destinations: kept with the state and changed per virtual server a sync
/// touches, so a partial sync never walks every virtual server.
/// </summary>
public sealed record KernelTotals(int Destinations, int Draining, ImmutableHashSet<VirtualServerKey> DrainingServers)
{
    public static KernelTotals Empty { get; } = new(0, 0, ImmutableHashSet<VirtualServerKey>.Empty);

    /// <summary>The totals of a whole kernel, counted (a full sync; tests compare this with the kept totals).</summary>
    public static KernelTotals Of(IEnumerable<KeyValuePair<VirtualServerKey, AppliedServer>> kernel)
    {
        var (destinations, draining) = (0, 0);
        var servers = ImmutableHashSet.CreateBuilder<VirtualServerKey>();
        foreach (var (key, server) in kernel)
        {
            destinations += server.Destinations.Count;
            draining += server.DrainingCount;
            if (server.HasDraining) servers.Add(key);
        }
        return new(destinations, draining, servers.ToImmutable());
    }

    /// <summary>The totals once the virtual server <paramref name="key"/> went from <paramref name="before"/> to <paramref name="after"/> (null: absent).</summary>
    public KernelTotals Replace(VirtualServerKey key, AppliedServer? before, AppliedServer? after)
    {
        if (ReferenceEquals(before, after)) return this;
        var servers = after?.HasDraining == true ? DrainingServers.Add(key) : DrainingServers.Remove(key);
        return new(Destinations - (before?.Destinations.Count ?? 0) + (after?.Destinations.Count ?? 0),
            Draining - (before?.DrainingCount ?? 0) + (after?.DrainingCount ?? 0), servers);
    }
}

/// <summary>
/// Which service ports want a key (a virtual server, an address, an ipset entry). Two service ports
/// may want the same one (the API allows the same external IP and port twice; two ports of a service
/// share its address): a virtual server goes to the first in name order, as the first matching
/// iptables rule would, and the next one takes it over when it goes.
/// </summary>
public sealed class Claims<TKey> where TKey : notnull
{
    public static Claims<TKey> Empty { get; } = new(ImmutableDictionary<TKey, ImmutableSortedSet<ServicePortName>>.Empty);

    private Claims(ImmutableDictionary<TKey, ImmutableSortedSet<ServicePortName>> map) => Map = map;

    public ImmutableDictionary<TKey, ImmutableSortedSet<ServicePortName>> Map { get; }

    public IEnumerable<TKey> Keys => Map.Keys;
    public int Count => Map.Count;
    public bool Contains(TKey key) => Map.ContainsKey(key);
    public ServicePortName? Winner(TKey key) => Map.TryGetValue(key, out var owners) ? owners.Min : null;

    public Claims<TKey> Add(TKey key, ServicePortName owner) =>
        new(Map.SetItem(key, Map.TryGetValue(key, out var owners) ? owners.Add(owner) : [owner]));

    public Claims<TKey> Remove(TKey key, ServicePortName owner)
    {
        if (!Map.TryGetValue(key, out var owners)) return this;
        owners = owners.Remove(owner);
        return new(owners.IsEmpty ? Map.Remove(key) : Map.SetItem(key, owners));
    }

    /// <summary>Builds claims in bulk (a full sync).</summary>
    public static Claims<TKey> From(IEnumerable<(TKey Key, ServicePortName Owner)> claims)
    {
        var builder = new Dictionary<TKey, ImmutableSortedSet<ServicePortName>.Builder>();
        foreach (var (key, owner) in claims)
        {
            if (!builder.TryGetValue(key, out var owners)) builder[key] = owners = ImmutableSortedSet.CreateBuilder<ServicePortName>();
            owners.Add(owner);
        }
        return new(builder.ToImmutableDictionary(kv => kv.Key, kv => kv.Value.ToImmutable()));
    }
}

/// <summary>
/// What the planner remembers between syncs: each service port's objects, who claims what, and what
/// the kernel holds after the last sync (virtual servers with draining destinations, the node
/// addresses node ports were opened on, the helper rules last restored), with the totals kept
/// incrementally: <see cref="Totals"/> of <see cref="Kernel"/>, <see cref="SetSizes"/> (how many
/// entries each ipset of <see cref="Entries"/> wants; a set without entries is not a key).
/// </summary>
public sealed record IpvsPlannerState(
    ImmutableDictionary<ServicePortName, PortObjects> Ports,
    Claims<VirtualServerKey> Servers,
    Claims<IPAddress> Addresses,
    Claims<IpsetEntry> Entries,
    Claims<OutFilterEntry> OutFilter,
    ImmutableDictionary<VirtualServerKey, AppliedServer> Kernel,
    ImmutableArray<IPAddress> NodeAddresses,
    ImmutableDictionary<IpFamily, string> RuleBodies,
    KernelTotals Totals,
    ImmutableDictionary<string, int> SetSizes)
{
    /// <summary>The entries of <see cref="IpvsNames.ServiceNames"/> this state wants: each virtual server named after the service port that has it.</summary>
    public IEnumerable<IpsetEntry> NameEntries => Servers.Keys.Select(k => IpvsPlanner.NameEntry(k, Servers.Winner(k)!.Value));

    /// <summary>Destinations draining now (weight 0, waiting for their connections to end).</summary>
    public int DrainingCount => Totals.Draining;

    /// <summary>How many entries each ipset of <paramref name="entries"/> wants, counted (a full sync; tests compare this with the kept sizes).</summary>
    public static ImmutableDictionary<string, int> SizesOf(Claims<IpsetEntry> entries) =>
        entries.Keys.GroupBy(e => e.Set, StringComparer.Ordinal).ToImmutableDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);

    /// <summary><paramref name="sizes"/> after <paramref name="set"/> gained (+1) or lost (-1) a wanted entry.</summary>
    internal static ImmutableDictionary<string, int> Resize(ImmutableDictionary<string, int> sizes, string set, int delta)
    {
        var size = sizes.GetValueOrDefault(set) + delta;
        return size == 0 ? sizes.Remove(set) : sizes.SetItem(set, size);
    }
}

/// <summary>The rules of the built-in chains of one family, as iptables-save prints them ("-A INPUT …").</summary>
public sealed record BuiltInRules(IReadOnlySet<string> Nat, IReadOnlySet<string> Filter)
{
    public static BuiltInRules Empty { get; } = new(new HashSet<string>(), new HashSet<string>());
}

/// <summary>What a full sync reads from the kernel before planning.</summary>
public sealed record IpvsKernelView
{
    /// <summary>Whether kube-ipvs0 exists.</summary>
    public bool LinkExists { get; init; }

    /// <summary>The addresses on kube-ipvs0.</summary>
    public IReadOnlyCollection<IPAddress> LinkAddresses { get; init; } = [];

    /// <summary>The node's other addresses (not loopback, not IPv6 link-local, not on kube-ipvs0): node ports open on them.</summary>
    public IReadOnlyCollection<IPAddress> NodeAddresses { get; init; } = [];

    /// <summary>Every virtual server, with destinations and their connection counts.</summary>
    public IReadOnlyDictionary<VirtualServerKey, KernelVirtualServer> Services { get; init; } = new Dictionary<VirtualServerKey, KernelVirtualServer>();

    /// <summary>This mode's ipsets that exist, with their entries.</summary>
    public IReadOnlyDictionary<string, IReadOnlySet<string>> Ipsets { get; init; } = new Dictionary<string, IReadOnlySet<string>>();

    /// <summary>The built-in chains' rules per family (which of our jumps are there).</summary>
    public IReadOnlyDictionary<IpFamily, BuiltInRules> BuiltInRules { get; init; } = new Dictionary<IpFamily, BuiltInRules>();

    /// <summary>An empty kernel whose node has <paramref name="nodeAddresses"/> (golden tests, first boot).</summary>
    public static IpvsKernelView Empty(params IPAddress[] nodeAddresses) => new() { NodeAddresses = nodeAddresses };
}
