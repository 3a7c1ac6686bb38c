using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Nftables.Tests;

public sealed class NftKernelStateTests
{
    // What `nft -j -t list chains ip ; list sets ip ; list maps ip` printed (nft 1.0.6): one
    // document per command, with other tables mixed in.
    private const string Listing =
        """
        {"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"chain": {"family": "ip", "table": "nat", "name": "PREROUTING", "handle": 1, "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}}, {"chain": {"family": "ip", "table": "proxyplanes", "name": "nat-prerouting", "handle": 1, "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}}, {"chain": {"family": "ip", "table": "proxyplanes", "name": "service-KHN6ECMT-shop/web/tcp/http", "handle": 12}}]}
        {"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"set": {"family": "ip", "name": "affinity-X", "table": "proxyplanes", "type": "ipv4_addr", "handle": 9, "size": 65535, "flags": ["timeout", "dynamic"], "timeout": 60}}, {"set": {"family": "ip", "name": "source-ranges-X", "table": "proxyplanes", "type": "ipv4_addr", "handle": 10, "flags": ["interval"]}}]}
        {"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"map": {"family": "ip", "name": "service-ips", "table": "proxyplanes", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 8, "map": "verdict"}}]}

        """;

    [Fact]
    public void ParseJson_KeepsOurTablesObjects()
    {
        var state = NftKernelState.ParseJson(Listing, IpFamily.IPv4, "proxyplanes");

        Assert.True(state.TableExists);
        Assert.Equal(["nat-prerouting", "service-KHN6ECMT-shop/web/tcp/http"], state.Chains.Keys.Order());
        Assert.Equal(new NftBaseChain("nat", "prerouting", -100), state.Chains["nat-prerouting"].Base);
        Assert.Null(state.Chains["service-KHN6ECMT-shop/web/tcp/http"].Base);

        var affinity = state.Sets["affinity-X"];
        Assert.True(affinity.SameDefinition(new NftSet("affinity-X") { Type = new(["ipv4_addr"]), Flags = new(["dynamic", "timeout"]), TimeoutSeconds = 60 }));
        Assert.Equal(["interval"], state.Sets["source-ranges-X"].Flags);
        Assert.True(state.Maps["service-ips"].SameDefinition(new NftMap("service-ips") { Type = new(["ipv4_addr", "inet_proto", "inet_service"]), ValueType = "verdict" }));
    }

    // nft 1.0.6 `-j list maps` of an endpoint-slots map prints a concatenated value as one string
    // ("ipv4_addr . inet_service"); an array of types (as nft's JSON schema also allows) reads the same.
    [Theory]
    [InlineData("\"ipv4_addr . inet_service\"")]
    [InlineData("[\"ipv4_addr\", \"inet_service\"]")]
    public void ParseJson_ConcatenatedMapValue_IsKept(string value)
    {
        var json = """{"nftables": [{"map": {"family": "ip", "name": "endpoint-slots-tcp-00", "table": "proxyplanes", "type": "integer", "handle": 1, "map": """ +
            value + """, "flags": ["interval"]}}]}""";

        var map = NftKernelState.ParseJson(json, IpFamily.IPv4, "proxyplanes").Maps["endpoint-slots-tcp-00"];

        Assert.Equal("ipv4_addr . inet_service", map.ValueType);
        Assert.True(map.ElementTypes.Interval);
    }

    [Fact]
    public void ParseJson_OtherFamilyOrTable_IsAbsent()
    {
        Assert.False(NftKernelState.ParseJson(Listing, IpFamily.IPv6, "proxyplanes").TableExists);
        var other = NftKernelState.ParseJson(Listing, IpFamily.IPv4, "missing");
        Assert.False(other.TableExists);
        Assert.Empty(other.Chains);
    }
}
