using System.Collections.Immutable;
using System.Net;

namespace ProxyPlanes.Model;

/// <summary>One endpoint of one service port, with the conditions policy decisions need.</summary>
public sealed record EndpointInfo(IPAddress Address, int Port) : IComparable<EndpointInfo>
{
    public bool Ready { get; init; } = true;
    public bool Serving { get; init; } = true;
    public bool Terminating { get; init; }

    /// <summary>The endpoint runs on this node.</summary>
    public bool IsLocal { get; init; }

    public string? NodeName { get; init; }
    public string? Zone { get; init; }

    // Both hint lists live in one object that only hinted endpoints have: two nullable arrays inline
    // would take 32 of this record's ~80 bytes, for every endpoint (issue 13: 250,000 at 50,000 × 5).
    private readonly Hints? _hints;

    /// <summary>Zones this endpoint is hinted for; null when the slice carries no hints for it.</summary>
    public EquatableArray<string>? ZoneHints
    {
        get => _hints?.Zones;
        init => _hints = Hints.Of(value, _hints?.Nodes);
    }

    /// <summary>Nodes this endpoint is hinted for (trafficDistribution PreferSameNode); null when the slice carries none for it.</summary>
    public EquatableArray<string>? NodeHints
    {
        get => _hints?.Nodes;
        init => _hints = Hints.Of(_hints?.Zones, value);
    }

    public IpFamily Family => Address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? IpFamily.IPv6 : IpFamily.IPv4;

    public string Endpoint => Family == IpFamily.IPv6 ? $"[{Address}]:{Port}" : $"{Address}:{Port}";

    public int CompareTo(EndpointInfo? other)
    {
        if (other is null) return 1;
        var c = CompareAddresses(Address, other.Address);
        return c != 0 ? c : Port.CompareTo(other.Port);
    }

    public override string ToString() => Endpoint;

    /// <summary>An endpoint's hints, compared by value (the record's equality compares them through this field).</summary>
    private sealed record Hints(EquatableArray<string>? Zones, EquatableArray<string>? Nodes)
    {
        public static Hints? Of(EquatableArray<string>? zones, EquatableArray<string>? nodes) =>
            zones is null && nodes is null ? null : new Hints(zones, nodes);
    }

    internal static int CompareAddresses(IPAddress a, IPAddress b)
    {
        Span<byte> x = stackalloc byte[16], y = stackalloc byte[16];
        a.TryWriteBytes(x, out var lx);
        b.TryWriteBytes(y, out var ly);
        return lx != ly ? lx.CompareTo(ly) : x[..lx].SequenceCompareTo(y[..ly]);
    }
}

/// <summary>
/// The endpoints of one service port after policy: which may serve cluster traffic, which may
/// serve traffic that must stay on this node, and every endpoint any traffic may reach (the
/// endpoint chains a backend must build). Decided in Core by <see cref="EndpointCategorizer"/>; data
/// planes read them through the verdicts (<see cref="ServicePortVerdict"/>), not directly.
/// </summary>
public sealed record EndpointSet(
    EquatableArray<EndpointInfo> AllReachable,
    EquatableArray<EndpointInfo> Cluster,
    EquatableArray<EndpointInfo> Local)
{
    public static EndpointSet Empty { get; } = new(EquatableArray<EndpointInfo>.Empty, EquatableArray<EndpointInfo>.Empty, EquatableArray<EndpointInfo>.Empty);

    /// <summary>
    /// Some endpoint anywhere could serve (ready, or serving while terminating). Without one,
    /// traffic is rejected; with one but none usable for a given policy, it is dropped.
    /// </summary>
    public bool HasAnyEndpoints { get; init; }
}
