using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Backends.Nftables.Tests;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Ipvs.Tests;

/// <summary>
/// <c>proxyplanes explain</c> in IPVS mode over the in-memory kernel: the planner's real output is
/// applied, then the kernel is read back and the packet traced. What the kernel holds decides, so a
/// change made behind the daemon's back is seen.
/// </summary>
public sealed class IpvsExplainerTests : IDisposable
{
    private static readonly IpFamily[] Families = [IpFamily.IPv4, IpFamily.IPv6];
    private static readonly VirtualServerKey Web = new(IPAddress.Parse("10.96.0.10"), Protocol.TCP, 80);
    private static readonly RealServerKey A = new(IPAddress.Parse("10.244.1.2"), 8080);
    private static readonly RealServerKey B = new(IPAddress.Parse("10.244.2.3"), 8080);
    private const string NodeIP = "203.0.113.1";

    private readonly ProxyMetrics _metrics = new();
    private readonly FakeIpvsKernel _kernel = new(IpvsPlannerGoldenTests.NodeIPs);
    private readonly IpvsExplainer _explainer;

    public IpvsExplainerTests() => _explainer = new IpvsExplainer(_kernel, Families);

    public void Dispose() => _metrics.Dispose();

    private IpvsBackend Backend(string? scheduler = null) =>
        new(_kernel, _metrics, NullLogger.Instance, Families, scheduler, TimeSpan.FromMinutes(15));

    private async Task<IpvsBackend> SyncAsync(params ServicePortState[] ports) => await SyncAsync(null, ports);

    private async Task<IpvsBackend> SyncAsync(string? scheduler, params ServicePortState[] ports)
    {
        var backend = Backend(scheduler);
        await backend.SyncAsync(StateBuilder.Full(StateBuilder.State(null, ports)), default);
        return backend;
    }

    private Task<PacketFate> ExplainAsync(string destination, int port, string? from = null, Protocol protocol = Protocol.TCP) =>
        _explainer.ExplainAsync(new PacketQuestion(protocol, IPAddress.Parse(destination), port, from is null ? null : IPAddress.Parse(from)), default);

    private static ServicePortState WebPort(Func<ServicePortInfo, ServicePortInfo>? change = null) =>
        StateBuilder.Port((change ?? (i => i))(StateBuilder.Info("web", "10.96.0.10")),
            StateBuilder.Endpoint("10.244.1.2"), StateBuilder.Endpoint("10.244.2.3", local: false));

    [Fact]
    public async Task ClusterIP_SpreadsOverTheRealServers_ByTheirWeights()
    {
        await SyncAsync("wrr", WebPort());
        // The weights the kernel holds decide (the proxy writes 1; an operator may change them).
        await _kernel.ApplyAsync([new EditDestination(Web, A, 3)], default);

        var fate = await ExplainAsync("10.96.0.10", 80);

        Assert.Equal("ns/web:http", fate.Match);
        Assert.Equal(Frontends.ClusterIP, fate.Frontend);
        Assert.Equal(PacketVerdict.Forward, fate.Verdict);
        Assert.Equal([("10.244.1.2:8080", 0.75), ("10.244.2.3:8080", 0.25)], fate.Endpoints.Select(e => (e.Endpoint, e.Share)));
        Assert.False(fate.Affinity);
        Assert.Contains(fate.Steps, s => s.StartsWith("ipvs -t 10.96.0.10:80 -s wrr", StringComparison.Ordinal));
    }

    [Fact]
    public async Task RoundRobin_GivesEveryRealServerAnEqualShare_WhateverItsWeight()
    {
        await SyncAsync(WebPort());
        await _kernel.ApplyAsync([new EditDestination(Web, A, 3)], default);

        var fate = await ExplainAsync("10.96.0.10", 80);

        Assert.Equal([0.5, 0.5], fate.Endpoints.Select(e => e.Share));
    }

    [Fact]
    public async Task Masquerade_OffClusterSourcesYes_PodsNo_HairpinOnlyForTheEndpointItself()
    {
        await SyncAsync(WebPort());

        var client = await ExplainAsync("10.96.0.10", 80, "192.0.2.50");
        var pod = await ExplainAsync("10.96.0.10", 80, "10.244.3.4");
        var self = await ExplainAsync("10.96.0.10", 80, "10.244.1.2");

        Assert.True(client.Masquerade);
        Assert.All(client.Endpoints, e => Assert.True(e.Masquerade));
        Assert.Contains(client.Steps, s => s.Contains("KUBE-MARK-MASQ", StringComparison.Ordinal));
        Assert.False(pod.Masquerade);
        Assert.Contains("source kept", pod.Reason, StringComparison.Ordinal);
        // A local endpoint reaching itself is masqueraded (KUBE-LOOP-BACK), the flow as a whole is not.
        Assert.False(self.Masquerade);
        Assert.True(self.Endpoints.Single(e => e.Endpoint == "10.244.1.2:8080").Masquerade);
        Assert.False(self.Endpoints.Single(e => e.Endpoint == "10.244.2.3:8080").Masquerade);
    }

    [Fact]
    public async Task NoEndpoints_IsRejectedByIpvs_AndOtherPortsOfTheAddressByTheFilter()
    {
        await SyncAsync(StateBuilder.Port(StateBuilder.Info("lonely", "10.96.0.20")));

        var fate = await ExplainAsync("10.96.0.20", 80);
        var otherPort = await ExplainAsync("10.96.0.20", 81);

        Assert.Equal(("ns/lonely:http", PacketVerdict.Reject, "no endpoints"), (fate.Match, fate.Verdict, fate.Reason));
        Assert.Empty(fate.Endpoints);
        Assert.Equal(PacketVerdict.Reject, otherPort.Verdict);
        Assert.Null(otherPort.Match);
        Assert.StartsWith("no service port at this address and port", otherPort.Reason, StringComparison.Ordinal);
        Assert.Contains(otherPort.Steps, s => s.Contains("-A KUBE-IPVS-FILTER", StringComparison.Ordinal) && s.EndsWith("-j REJECT", StringComparison.Ordinal));
    }

    [Fact]
    public async Task LocalPolicy_WithoutLocalEndpoint_DropsExternalTraffic_ButPodsReachEveryEndpoint()
    {
        await SyncAsync(StateBuilder.Port(StateBuilder.Info("edge", "10.96.0.30") with { NodePort = 30030, ExternalPolicyLocal = true },
            StateBuilder.Endpoint("10.244.2.3", local: false)));

        var client = await ExplainAsync(NodeIP, 30030, "192.0.2.50");
        var pod = await ExplainAsync(NodeIP, 30030, "10.244.1.7");

        Assert.Equal(("ns/edge:http", Frontends.NodePort, PacketVerdict.Drop), (client.Match, client.Frontend, client.Verdict));
        Assert.Equal("traffic policy Local, and no endpoint on this node", client.Reason);
        Assert.Equal(PacketVerdict.Forward, pod.Verdict);
        Assert.Equal(["10.244.2.3:8080"], pod.Endpoints.Select(e => e.Endpoint));
    }

    [Fact]
    public async Task LocalPolicy_WithLocalEndpoint_KeepsTheClientsSource()
    {
        await SyncAsync(StateBuilder.Port(StateBuilder.Info("edge", "10.96.0.30") with { NodePort = 30030, ExternalPolicyLocal = true },
            StateBuilder.Endpoint("10.244.1.2"), StateBuilder.Endpoint("10.244.2.3", local: false)));

        var fate = await ExplainAsync(NodeIP, 30030, "192.0.2.50");
        var clusterIP = await ExplainAsync("10.96.0.30", 80, "192.0.2.50");

        Assert.Equal(PacketVerdict.Forward, fate.Verdict);
        Assert.Equal(["10.244.1.2:8080"], fate.Endpoints.Select(e => e.Endpoint));
        Assert.False(fate.Masquerade);
        Assert.Equal("1 endpoint on this node (traffic policy Local); source kept", fate.Reason);
        Assert.Equal(2, clusterIP.Endpoints.Count);
        Assert.True(clusterIP.Masquerade);
    }

    [Fact]
    public async Task Affinity_IsIpvsPersistence_WithItsTimeout()
    {
        await SyncAsync(WebPort(i => i with { StickyTimeoutSeconds = 600 }));

        var fate = await ExplainAsync("10.96.0.10", 80);

        Assert.True(fate.Affinity);
        Assert.EndsWith("ClientIP affinity: a client keeps its endpoint for 600s", fate.Reason, StringComparison.Ordinal);
        Assert.Contains(fate.Steps, s => s.Contains("-s rr -p 600", StringComparison.Ordinal));
    }

    [Fact]
    public async Task SourceRanges_LetTheRangeIn_AndDropOthers()
    {
        await SyncAsync(WebPort(i => i with
        {
            NodePort = 30012,
            LoadBalancerIPs = new EquatableArray<IPAddress>([IPAddress.Parse("198.51.100.20")]),
            LoadBalancerSourceRanges = new EquatableArray<IpPrefix>([IpPrefix.Parse("192.0.2.10/32")]),
        }));

        var allowed = await ExplainAsync("198.51.100.20", 80, "192.0.2.10");
        var other = await ExplainAsync("198.51.100.20", 80, "192.0.2.99");

        Assert.Equal((Frontends.LoadBalancerIP, PacketVerdict.Forward), (allowed.Frontend, allowed.Verdict));
        Assert.Equal(2, allowed.Endpoints.Count);
        Assert.Equal(("ns/web:http", PacketVerdict.Drop, "source outside loadBalancerSourceRanges"), (other.Match, other.Verdict, other.Reason));
        Assert.Contains(other.Steps, s => s.Contains("-A KUBE-SOURCE-RANGES-FIREWALL -j DROP", StringComparison.Ordinal));
    }

    [Fact]
    public async Task UnknownAddress_Passes()
    {
        await SyncAsync(WebPort());

        var elsewhere = await ExplainAsync("10.96.9.9", 80);
        var nodePortClosed = await ExplainAsync(NodeIP, 31999, "192.0.2.50");

        Assert.Equal((null, null, PacketVerdict.Pass), (elsewhere.Match, elsewhere.Frontend, elsewhere.Verdict));
        Assert.Contains("not an address of this node", elsewhere.Reason, StringComparison.Ordinal);
        Assert.Equal(PacketVerdict.Pass, nodePortClosed.Verdict);
        Assert.StartsWith("nothing of ours matches", nodePortClosed.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DestinationRemovedBehindTheDaemonsBack_IsSeen_AndADrainingOneIsNotReached()
    {
        await SyncAsync(WebPort());
        Assert.Equal(2, (await ExplainAsync("10.96.0.10", 80)).Endpoints.Count);

        _kernel.RemoveDestinationBehindTheBack(Web, A);
        var removed = await ExplainAsync("10.96.0.10", 80);
        await _kernel.ApplyAsync([new EditDestination(Web, B, 0)], default);
        var draining = await ExplainAsync("10.96.0.10", 80);

        Assert.Equal(["10.244.2.3:8080"], removed.Endpoints.Select(e => e.Endpoint));
        Assert.Equal((PacketVerdict.Reject, "no endpoints"), (draining.Verdict, draining.Reason));
        Assert.Contains(draining.Steps, s => s.Contains("-r 10.244.2.3:8080 -w 0: draining", StringComparison.Ordinal));
    }

    [Fact]
    public async Task List_HasEveryVirtualServer_Named()
    {
        await SyncAsync(WebPort(i => i with { NodePort = 30011 }), StateBuilder.Port(StateBuilder.Info("lonely", "10.96.0.20")));

        var list = await _explainer.ListAsync(default);

        Assert.Equal(
            [
                $"tcp 10.96.0.10:80 ns/web:http {Frontends.ClusterIP} Forward",
                $"tcp 10.96.0.20:80 ns/lonely:http {Frontends.ClusterIP} Reject",
                $"tcp {NodeIP}:30011 ns/web:http {Frontends.NodePort} Forward",
            ],
            list.Select(f => $"{f.Question} {f.Fate.Match ?? "-"} {f.Fate.Frontend ?? "-"} {f.Fate.Verdict}"));
    }

    [Fact]
    public async Task HoldsState_OnlyOnceSomethingIsProgrammed()
    {
        Assert.False(await _explainer.HoldsStateAsync(default));
        await SyncAsync(WebPort());
        Assert.True(await _explainer.HoldsStateAsync(default));
    }

    [Fact]
    public async Task Names_FollowTheServicePorts_ThroughPartialSyncs()
    {
        var backend = await SyncAsync(WebPort());
        var names = IpvsNames.ServiceNames.Name(IpFamily.IPv4);
        Assert.Equal(["10.96.0.10,tcp:80 comment \"ns/web:http\""], _kernel.SetEntries(names));

        // Removed: its name goes with its virtual server.
        await backend.SyncAsync(StateBuilder.Partial(StateBuilder.State(null), StateBuilder.Name("web")), default);
        Assert.Empty(_kernel.SetEntries(names)!);
        Assert.Equal((null, PacketVerdict.Pass), ((await ExplainAsync("10.96.0.10", 80)).Match, (await ExplainAsync("10.96.0.10", 80)).Verdict));

        // Another service takes the address: the entry names it.
        var other = StateBuilder.Port(StateBuilder.Info("other", "10.96.0.10"), StateBuilder.Endpoint("10.244.1.2"));
        await backend.SyncAsync(StateBuilder.Partial(StateBuilder.State(null, other), StateBuilder.Name("other")), default);
        Assert.Equal(["10.96.0.10,tcp:80 comment \"ns/other:http\""], _kernel.SetEntries(names));
        Assert.Equal("ns/other:http", (await ExplainAsync("10.96.0.10", 80)).Match);
    }
}
