using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Backends.Nftables.Tests;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.Sandbox;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Backends.Ebpf.Tests;

/// <summary>
/// The backend against real maps and real connections: a private bpffs (pins), a child cgroup the test
/// made (the hooks' only target), a network namespace with two TCP servers, and a client shell in that
/// cgroup. A "restart" closes every fd this process had on the maps, programs and links (what a killed
/// daemon's exit does) and opens the pins again.
/// </summary>
public sealed class EbpfBackendTests : IDisposable
{
    private const string Vip = "10.96.0.10";
    private readonly CleanupStack _cleanup = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly TestCgroup _cgroup;
    private readonly TestBpfFs _bpfFs;
    private readonly NetworkNamespace _namespace;

    public EbpfBackendTests()
    {
        try
        {
            _cgroup = Track(new TestCgroup(Guid.NewGuid().ToString("N")[..6]));
            _bpfFs = Track(new TestBpfFs());
            // Before the unmount: detach what a test left pinned (a no-op when it removed everything itself).
            _cleanup.Add(new Disposer(() => EbpfKernel.Remove(_bpfFs.Path, NullLogger.Instance)));
            _namespace = Track(NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-ebpf"));
            var up = _namespace.ExecAsync("ip", "link", "set", "lo", "up").GetAwaiter().GetResult();
            Assert.True(up.Succeeded, up.StandardError);
            StartServer("127.0.0.2", "backend-a");
            StartServer("127.0.0.3", "backend-b");
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    private EbpfLocation Location => new(_bpfFs.Path, _cgroup.Path);

    /// <summary>
    /// The kernel opened in the test's namespace: the tc programs go on that namespace's interfaces and the
    /// fixed nftables table into it, never the host's (every later sync works in the namespace Open ran in).
    /// </summary>
    private EbpfKernel OpenKernel(EbpfLocation location) => _namespace.Run(() => EbpfKernel.Open(location, NullLogger.Instance));

    /// <summary>
    /// Whether the tc program of <paramref name="direction"/> is on <paramref name="interfaceName"/> in the test's
    /// namespace: its pinned tcx link where the kernel has tcx (the development kernel), else (the VM lane's 6.1) our
    /// clsact filter, as <c>tc filter show</c> lists it: a BPF filter at priority 0x7070 (28784).
    /// </summary>
    private async Task<bool> TcAttachedAsync(string pins, string interfaceName, TcDirection direction)
    {
        if (BpfTestSupport.KernelHasTcx) return File.Exists(EbpfKernel.TcLinkPin(pins, interfaceName, direction));
        var shown = await _namespace.ExecAsync("tc", "filter", "show", "dev", interfaceName, direction == TcDirection.Ingress ? "ingress" : "egress");
        return shown.Succeeded && shown.StandardOutput.Contains("pref 28784 bpf", StringComparison.Ordinal);
    }

    private static DesiredState State(params string[] backends) =>
        StateBuilder.State(null, StateBuilder.Port(StateBuilder.Info("web", Vip), [.. backends.Select(b => StateBuilder.Endpoint(b))]));

    /// <summary>
    /// The node side of the mode, in the test's namespace only: the tc pair on every up non-loopback
    /// interface (pinned tcx links; clsact filters on a kernel without tcx), none on lo; the node addresses map holds the interfaces' IPv4
    /// addresses (not loopback), or only --nodeport-addresses' choice; a full sync gives a new interface
    /// its hooks and drops a gone one's pins; the fixed nftables table is there until removed.
    /// </summary>
    [KernelFact(needsCgroup: true)]
    public async Task FullSync_AttachesTcOnNodeInterfacesAndWritesNodeAddresses_InItsOwnNamespace()
    {
        await Ip("link add pptca type veth peer name pptcb", "addr add 192.0.2.1/24 dev pptca", "addr add 2001:db8:5::1/64 dev pptca nodad", "link set pptca up", "link set pptcb up");
        // The ip table an earlier version left: replaced by the inet one.
        Assert.True((await _namespace.ExecAsync("nft", "add", "table", "ip", EbpfNftables.Table)).Succeeded);
        using var metrics = new ProxyMetrics();
        using var kernel = OpenKernel(Location);
        var pins = Path.Combine(_bpfFs.Path, EbpfLocation.PinFolder);
        Assert.Equal(["pptca", "pptcb"], kernel.TcInterfaces.Order(StringComparer.Ordinal));
        foreach (var direction in new[] { TcDirection.Ingress, TcDirection.Egress })
        {
            Assert.True(await TcAttachedAsync(pins, "pptca", direction));
            Assert.False(await TcAttachedAsync(pins, "lo", direction));
        }
        Assert.True((await _namespace.ExecAsync("nft", "list", "table", "inet", EbpfNftables.Table)).Succeeded);
        Assert.False((await _namespace.ExecAsync("nft", "list", "table", "ip", EbpfNftables.Table)).Succeeded);

        var backend = new EbpfBackend(kernel, metrics, NullLogger.Instance);
        await backend.SyncAsync(StateBuilder.Full(State("127.0.0.2")), default);
        Assert.Equal([MapLayout.NetworkAddress(IPAddress.Parse("192.0.2.1"))], kernel.NodeAddresses.Keys<uint>());
        // IPv6: the global address, not the veths' link-local ones.
        Assert.Equal([IPAddress.Parse("2001:db8:5::1")], kernel.NodeAddresses6.Keys<MapAddress>().Select(a => a.ToIPAddress()));
        // Detect-local by the cluster CIDR: each family's prefix is the local sources of its map.
        Assert.Equal([LocalSource4Key.For(IpPrefix.Parse("10.244.0.0/16"))], kernel.LocalSources.Keys<LocalSource4Key>());
        Assert.True(kernel.LocalSources.TryLookup(LocalSource4Key.For(IpPrefix.Parse("10.244.0.0/16")), out LocalSource4Value plain));
        Assert.Equal(0u, plain.Flags);
        Assert.Equal([IpPrefix.Parse("fd00:10:244::/48")], kernel.LocalSources6.Keys<LocalSource6Key>().Select(k => k.Prefix));
        Assert.True(kernel.LocalSources6.TryLookup(LocalSource6Key.For(IpPrefix.Parse("fd00:10:244::/48")), out LocalSource4Value plain6));
        Assert.Equal(0u, plain6.Flags);

        // A new interface, and --nodeport-addresses choosing another address.
        await Ip("link add pptcc type veth peer name pptcd", "addr add 198.51.100.7/32 dev pptcc", "link set pptcc up");
        // --masquerade-all and this node's pod CIDR (NodeCIDR) instead of the cluster's.
        var chosen = StateBuilder.Network with
        {
            NodePortAddresses = new EquatableArray<IPAddress>([IPAddress.Parse("198.51.100.7")]),
            MasqueradeAll = true,
            LocalDetector = new LocalTrafficDetector(LocalDetectMode.NodeCidr, new EquatableArray<IpPrefix>([IpPrefix.Parse("10.244.1.0/24"), IpPrefix.Parse("fd00:10:244:1::/64")])),
        };
        await backend.SyncAsync(StateBuilder.Full(StateBuilder.State(chosen, StateBuilder.Port(StateBuilder.Info("web", Vip), [StateBuilder.Endpoint("127.0.0.2")]))), default);
        Assert.Contains("pptcc", kernel.TcInterfaces);
        Assert.True(await TcAttachedAsync(pins, "pptcc", TcDirection.Egress));
        Assert.Equal([MapLayout.NetworkAddress(IPAddress.Parse("198.51.100.7"))], kernel.NodeAddresses.Keys<uint>());
        Assert.Empty(kernel.NodeAddresses6.Keys<MapAddress>());
        Assert.Equal([LocalSource4Key.For(IpPrefix.Parse("10.244.1.0/24"))], kernel.LocalSources.Keys<LocalSource4Key>());
        Assert.True(kernel.LocalSources.TryLookup(LocalSource4Key.For(IpPrefix.Parse("10.244.1.0/24")), out LocalSource4Value masqueradeAll));
        Assert.Equal(MapLayout.LocalSourceMasquerade, masqueradeAll.Flags);
        Assert.Equal([IpPrefix.Parse("fd00:10:244:1::/64")], kernel.LocalSources6.Keys<LocalSource6Key>().Select(k => k.Prefix));
        Assert.True(kernel.LocalSources6.TryLookup(LocalSource6Key.For(IpPrefix.Parse("fd00:10:244:1::/64")), out LocalSource4Value masqueradeAll6));
        Assert.Equal(MapLayout.LocalSourceMasquerade, masqueradeAll6.Flags);
        Assert.True(await backend.CanaryIntactAsync(default));

        // Pins removed behind the daemon's back: the canary sees it, a full sync pins and attaches again.
        // (A tcx link's pin too; clsact filters have none.)
        string[] tcPin = BpfTestSupport.KernelHasTcx ? [Path.GetFileName(EbpfKernel.TcLinkPin(pins, "pptca", TcDirection.Ingress))] : [];
        foreach (var pin in new[] { MapLayout.ServicesMap, MapLayout.NodeAddressesMap, "link_" + SockPrograms.Connect4 }.Concat(tcPin))
            File.Delete(Path.Combine(pins, pin));
        Assert.False(await backend.CanaryIntactAsync(default));
        await backend.SyncAsync(StateBuilder.Full(State("127.0.0.2")), default);
        Assert.True(await backend.CanaryIntactAsync(default));
        Assert.True(await TcAttachedAsync(pins, "pptca", TcDirection.Ingress));

        // The interface goes: its pins go with the next full sync. Detect-local by interface name: no prefix to hold.
        await Ip("link del pptcc");
        var byInterface = StateBuilder.Network with { LocalDetector = new LocalTrafficDetector(LocalDetectMode.InterfaceNamePrefix, EquatableArray<IpPrefix>.Empty, "veth") };
        await backend.SyncAsync(StateBuilder.Full(StateBuilder.State(byInterface, StateBuilder.Port(StateBuilder.Info("web", Vip), [StateBuilder.Endpoint("127.0.0.2")]))), default);
        Assert.Empty(kernel.LocalSources.Keys<LocalSource4Key>());
        Assert.Empty(kernel.LocalSources6.Keys<LocalSource6Key>());
        Assert.DoesNotContain("pptcc", kernel.TcInterfaces);
        Assert.False(await TcAttachedAsync(pins, "pptcc", TcDirection.Ingress));

        _namespace.Run(() => EbpfKernel.RemoveNamespaceState(NullLogger.Instance));
        Assert.False((await _namespace.ExecAsync("nft", "list", "table", "inet", EbpfNftables.Table)).Succeeded);
    }

    private async Task Ip(params string[] commands)
    {
        foreach (var command in commands)
        {
            var result = await _namespace.ExecAsync(["ip", .. command.Split(' ')]);
            Assert.True(result.Succeeded, $"ip {command}: {result.StandardError}");
        }
    }

    [KernelFact(needsCgroup: true)]
    public async Task Sync_ThenRestart_PinsKeepTrafficAndTheNextFullSyncWritesNothing()
    {
        using (var metrics = new ProxyMetrics())
        using (var kernel = OpenKernel(Location))
        {
            Assert.False(kernel.ReusedMaps);
            var backend = new EbpfBackend(kernel, metrics, NullLogger.Instance);
            await backend.SyncAsync(StateBuilder.Full(State("127.0.0.2", "127.0.0.3")), default);
            Assert.Equal(5, backend.LastPlan!.WriteCount);
            Assert.True(await backend.CanaryIntactAsync(default));
            Assert.Contains("proxyplanes_ebpf_map_entries{map=\"pp_services_v2\"} 3", await ScrapeAsync(metrics));
            AssertSpread(Client(20));
        }

        // Every fd of "the old process" is closed: only the pins hold the links and maps.
        AssertSpread(Client(20));

        using (var metrics = new ProxyMetrics())
        using (var kernel = OpenKernel(Location))
        {
            Assert.True(kernel.ReusedMaps);
            var backend = new EbpfBackend(kernel, metrics, NullLogger.Instance);
            await backend.SyncAsync(StateBuilder.Full(State("127.0.0.2", "127.0.0.3")), default);
            Assert.Equal(0, backend.LastPlan!.WriteCount);
            AssertSpread(Client(20));

            // A partial sync: one backend gone.
            await backend.SyncAsync(StateBuilder.Partial(State("127.0.0.3"), StateBuilder.Name("web")), default);
            Assert.All(Client(10), reply => Assert.Equal("ok backend-b", reply));
        }
        Assert.Equal(SockPrograms.All.Count, CgroupLinks());
    }

    /// <summary>
    /// loadBalancerSourceRanges of a dual-stack load balancer: each family's prefixes go into its own trie
    /// (pp_srcrange_v1, pp_srcrange6_v1) under that family's master, a full sync reads both back (nothing to
    /// write), and a range removed is deleted from its trie only.
    /// </summary>
    [KernelFact(needsCgroup: true)]
    public async Task Sync_DualStackSourceRanges_EachFamilysTrie_ReadBackByTheFullSync()
    {
        var info = StateBuilder.Info("lb", Vip + ",fd00:10:96::10") with
        {
            LoadBalancerIPs = new EquatableArray<IPAddress>([IPAddress.Parse("192.0.2.10"), IPAddress.Parse("2001:db8:ff::10")]),
            LoadBalancerSourceRanges = new EquatableArray<IpPrefix>([IpPrefix.Parse("203.0.113.0/24"), IpPrefix.Parse("2001:db8:100::/48"), IpPrefix.Parse("2001:db8:200::7/128")]),
        };
        DesiredState StateWith(ServicePortInfo port) =>
            StateBuilder.State(null, StateBuilder.Port(port, StateBuilder.Endpoint("127.0.0.2"), StateBuilder.Endpoint("fd00:10:244::2")));
        using var metrics = new ProxyMetrics();
        using var kernel = OpenKernel(Location);
        var backend = new EbpfBackend(kernel, metrics, NullLogger.Instance);

        await backend.SyncAsync(StateBuilder.Full(StateWith(info)), default);
        var masters = kernel.Read().Services.Where(s => s.Key.Slot == 0 && (s.Value.Flags & MapLayout.ServiceFlagSourceRanges) != 0)
            .ToDictionary(s => s.Key.Address.ToIPAddress().ToString(), s => s.Value.RevNatId);
        var v4 = masters["192.0.2.10"];
        var v6 = masters["2001:db8:ff::10"];
        Assert.Equal([SourceRange4Key.For(v4, IPAddress.Parse("203.0.113.0"), 24)], kernel.SourceRanges.Keys<SourceRange4Key>());
        Assert.Equal(
            [SourceRange6Key.For(v6, IPAddress.Parse("2001:db8:100::"), 48), SourceRange6Key.For(v6, IPAddress.Parse("2001:db8:200::7"), 128)],
            kernel.SourceRanges6.Keys<SourceRange6Key>().OrderBy(k => k.Prefixlen));

        await backend.SyncAsync(StateBuilder.Full(StateWith(info)), default);
        Assert.Equal(0, backend.LastPlan!.WriteCount);

        var fewer = info with { LoadBalancerSourceRanges = new EquatableArray<IpPrefix>([IpPrefix.Parse("203.0.113.0/24"), IpPrefix.Parse("2001:db8:100::/48")]) };
        await backend.SyncAsync(StateBuilder.Partial(StateWith(fewer), info.Name), default);
        Assert.Equal([SourceRange6Key.For(v6, IPAddress.Parse("2001:db8:100::"), 48)], kernel.SourceRanges6.Keys<SourceRange6Key>());
        Assert.Single(kernel.SourceRanges.Keys<SourceRange4Key>());
        _namespace.Run(() => EbpfKernel.RemoveNamespaceState(NullLogger.Instance));
    }

    [KernelFact(needsCgroup: true)]
    public async Task Remove_AfterSync_LeavesNoPinNoLinkAndStopsTheRewrite()
    {
        using (var metrics = new ProxyMetrics())
        using (var kernel = OpenKernel(Location))
        {
            await new EbpfBackend(kernel, metrics, NullLogger.Instance).SyncAsync(StateBuilder.Full(State("127.0.0.2")), default);
        }
        Assert.Equal(SockPrograms.All.Count, CgroupLinks());
        Assert.All(Client(3), reply => Assert.Equal("ok backend-a", reply));

        var removed = EbpfKernel.Remove(_bpfFs.Path, NullLogger.Instance);

        Assert.Contains("link_pp_connect4", removed);
        Assert.Contains(MapLayout.ServicesMap, removed);
        Assert.DoesNotContain(Directory.GetFileSystemEntries(_bpfFs.Path), e => !Path.GetFileName(e).EndsWith(".debug", StringComparison.Ordinal));
        Assert.Equal(0, CgroupLinks());
        // Nothing rewrites the VIP any more: the namespace has no route to it.
        Assert.All(Client(1), reply => Assert.DoesNotContain("ok", reply, StringComparison.Ordinal));
        Assert.Empty(EbpfKernel.Remove(_bpfFs.Path, NullLogger.Instance));
    }

    [KernelFact(needsCgroup: true)]
    public async Task Open_PinnedLinksOnAnotherCgroup_MovesThemToTheNewOne()
    {
        using var other = new TestCgroup(Guid.NewGuid().ToString("N")[..6]);
        using (var metrics = new ProxyMetrics())
        using (var kernel = OpenKernel(Location with { Cgroup = other.Path }))
            await new EbpfBackend(kernel, metrics, NullLogger.Instance).SyncAsync(StateBuilder.Full(State("127.0.0.2")), default);
        Assert.Equal(SockPrograms.All.Count, CgroupLinks(other.Path));

        using (var kernel = OpenKernel(Location))
        {
            Assert.Equal(0, CgroupLinks(other.Path));
            Assert.Equal(SockPrograms.All.Count, CgroupLinks());
            Assert.All(Client(3), reply => Assert.Equal("ok backend-a", reply));
        }
        EbpfKernel.Remove(_bpfFs.Path, NullLogger.Instance);
    }

    /// <summary>
    /// The cost of a cold full sync of 10,000 services × 2 endpoints into real maps, of the full sync a
    /// restart runs over them (reads everything, writes nothing), and of one endpoint change, printed for
    /// the docs (never asserted: the machine is shared). 10,000 × 5 is the most layout 1's 65,536 entries hold.
    /// </summary>
    [KernelFact(needsCgroup: true)]
    public async Task Sync_TenThousandServices_PrintsTheCost()
    {
        var ports = Enumerable.Range(0, 10_000).Select(i =>
        {
            var info = StateBuilder.Info($"svc{i}", $"10.96.{i / 250}.{i % 250 + 1}");
            return (info, StateBuilder.Port(info, StateBuilder.Endpoint($"10.244.{i / 250}.{i % 250 + 1}"), StateBuilder.Endpoint($"10.245.{i / 250}.{i % 250 + 1}")));
        }).ToArray();
        var state = StateBuilder.State(null, [.. ports.Select(p => p.Item2)]);
        using var metrics = new ProxyMetrics();
        using var kernel = OpenKernel(Location);
        var backend = new EbpfBackend(kernel, metrics, NullLogger.Instance);

        var cold = Stopwatch.StartNew();
        var coldTimings = await backend.SyncAsync(StateBuilder.Full(state), default);
        cold.Stop();
        Assert.Equal(10_000 * 3 + 20_000, backend.LastPlan!.WriteCount);

        var restart = new EbpfBackend(kernel, metrics, NullLogger.Instance);
        var again = Stopwatch.StartNew();
        await restart.SyncAsync(StateBuilder.Full(state), default);
        again.Stop();
        Assert.Equal(0, restart.LastPlan!.WriteCount);

        var changes = new List<double>();
        for (var i = 0; i < 25; i++)
        {
            var (info, _) = ports[i * 397 % ports.Length];
            var changed = state.ServicePorts.SetItem(info.Name, StateBuilder.Port(info, StateBuilder.Endpoint($"10.246.0.{i + 1}"), StateBuilder.Endpoint($"10.247.0.{i + 1}")));
            state = state with { ServicePorts = changed };
            var one = Stopwatch.StartNew();
            await restart.SyncAsync(StateBuilder.Partial(state, info.Name), default);
            changes.Add(one.Elapsed.TotalMilliseconds);
        }
        changes.Sort();
        Console.WriteLine(
            $"eBPF 10,000 services x 2: cold full sync {cold.Elapsed.TotalMilliseconds:F0} ms (render {coldTimings.Render.TotalMilliseconds:F0} ms, apply {coldTimings.Apply.TotalMilliseconds:F0} ms, {backend.LastPlan.WriteCount} writes); " +
            $"restart full sync {again.Elapsed.TotalMilliseconds:F0} ms (0 writes); one endpoint change p50 {changes[changes.Count / 2]:F2} ms, max {changes[^1]:F2} ms");
        EbpfKernel.Remove(_bpfFs.Path, NullLogger.Instance);
    }

    /// <summary>
    /// Written one by one, or in runs of one kind as the kernel's batches take them (two runs here: the backends, then the
    /// slots and the master): the refusal names the same write either way.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Sync_MapWriteRefused_StopsWithOneLineAndTheRetryIsFull(bool batched)
    {
        var maps = new FailingMaps { FailAt = 2, Batched = batched };
        using var metrics = new ProxyMetrics();
        var backend = new EbpfBackend(maps, metrics, NullLogger.Instance);

        var error = await Assert.ThrowsAsync<BackendSyncException>(() => backend.SyncAsync(StateBuilder.Full(State("10.244.1.1", "10.244.1.2")), default));

        Assert.Equal(
            "eBPF: the kernel refused map write 3 of 5 (service 10.96.0.10:80/tcp slot 1 = backend 1  # ns/web:http): bpf(BPF_MAP_UPDATE_ELEM) on map pp_services_v2: E2BIG (Argument list too long): the map is full (max_entries); the writes before it are in force and the next sync is full",
            error.Message);
        Assert.DoesNotContain('\n', error.Message);
        Assert.Contains("proxyplanes_ebpf_map_update_failures_total{map=\"pp_services_v2\"} 1", await ScrapeAsync(metrics));
        Assert.Equal(batched ? 2 : 0, maps.Runs);

        maps.FailAt = -1;
        await backend.SyncAsync(StateBuilder.Partial(State("10.244.1.1", "10.244.1.2"), StateBuilder.Name("web")), default);
        Assert.True(backend.LastPlan!.Full);
        Assert.Equal(3, backend.LastPlan.WriteCount); // the two backends were in force already
        Assert.Equal(2, maps.Reads);
    }

    /// <summary>
    /// The stale-flow pass on a first sync (nothing applied yet, so every deletion is a UDP port's first endpoints): skipped
    /// when the connection maps are empty (a cold start: nothing to delete, no walk over every port), planned as before when
    /// they hold entries (a restart); and once something was applied, planned whatever the maps hold.
    /// </summary>
    [Fact]
    public async Task Sync_FirstSync_PlansStaleFlowsOnlyWhenTheConnectionMapsHoldEntries()
    {
        var dns = StateBuilder.Info("dns", "10.96.0.53", 53, "dns", Protocol.UDP);
        var state = StateBuilder.State(null, StateBuilder.Port(dns, StateBuilder.Endpoint("10.244.1.1", 53), StateBuilder.Endpoint("10.244.1.2", 53)));
        using var metrics = new ProxyMetrics();

        var cold = new ConnectionMaps { HoldsEntries = false };
        var backend = new EbpfBackend(cold, metrics, NullLogger.Instance);
        await backend.SyncAsync(StateBuilder.Full(state), default);
        Assert.Empty(cold.Deletions);
        Assert.Equal(1, cold.Asked);

        // Then an endpoint goes: planned although the maps still say they are empty (they are not asked).
        var less = StateBuilder.State(null, StateBuilder.Port(dns, StateBuilder.Endpoint("10.244.1.1", 53)));
        await backend.SyncAsync(StateBuilder.Partial(less, dns.Name), default);
        Assert.Equal(["EndpointRemoved 10.96.0.53:53/UDP via 10.244.1.2:53"], cold.Deletions.Select(Describe));
        Assert.Equal(1, cold.Asked);

        var restart = new ConnectionMaps { HoldsEntries = true };
        await new EbpfBackend(restart, metrics, NullLogger.Instance).SyncAsync(StateBuilder.Full(state), default);
        Assert.Equal(["ServiceNewlyActive 10.96.0.53:53/UDP"], restart.Deletions.Select(Describe));

        static string Describe(NodeTools.Conntrack.ConntrackDeletion d) =>
            d.ReplySource is null
                ? $"{d.Reason} {d.OriginalDestination}:{d.OriginalDestinationPort}/{d.Protocol}"
                : $"{d.Reason} {d.OriginalDestination}:{d.OriginalDestinationPort}/{d.Protocol} via {d.ReplySource}:{d.ReplySourcePort}";
    }

    /// <summary>Maps in memory whose connection maps hold entries or not (<see cref="HoldsEntries"/>), recording the deletions asked.</summary>
    private sealed class ConnectionMaps : IEbpfMaps
    {
        private EbpfMapContents _contents = EbpfMapContents.Empty;

        public bool HoldsEntries { get; init; }

        public int Asked { get; private set; }

        public List<NodeTools.Conntrack.ConntrackDeletion> Deletions { get; } = [];

        public EbpfMapContents Read() => _contents;

        public void Write(MapWrite write) => _contents = EbpfPlannerTests.Apply(_contents, [write]);

        public bool Intact() => true;

        public bool HoldsConnections()
        {
            Asked++;
            return HoldsEntries;
        }

        public int DeleteConnections(IReadOnlyList<NodeTools.Conntrack.ConntrackDeletion> deletions)
        {
            Deletions.AddRange(deletions);
            return 0;
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _cleanup.Dispose();
        _stop.Dispose();
    }

    private static async Task<string> ScrapeAsync(ProxyMetrics metrics)
    {
        using var stream = new MemoryStream();
        await metrics.Registry.CollectAndExportAsTextAsync(stream);
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    private static void AssertSpread(List<string> replies)
    {
        Assert.All(replies, reply => Assert.StartsWith("ok ", reply, StringComparison.Ordinal));
        Assert.Contains("ok backend-a", replies);
        Assert.Contains("ok backend-b", replies);
    }

    /// <summary>Programs attached to a cgroup at the four socket-hook attach points, as the kernel reports them (BPF_PROG_QUERY), not our pins.</summary>
    private int CgroupLinks(string? cgroup = null) =>
        BpfCgroup.AttachTypes.Sum(type => BpfCgroup.AttachedPrograms(cgroup ?? _cgroup.Path, type));

    private T Track<T>(T resource)
        where T : IDisposable => _cleanup.Track(resource);

    private void StartServer(string address, string name)
    {
        var listener = _namespace.Run(() =>
        {
            var server = new TcpListener(IPAddress.Parse(address), 8080);
            server.Start();
            return server;
        });
        _cleanup.Add(new Disposer(listener.Stop));
        var reply = Encoding.ASCII.GetBytes(name + "\n");
        _ = Task.Run(async () =>
        {
            while (!_stop.IsCancellationRequested)
            {
                try
                {
                    using var client = await listener.AcceptTcpClientAsync(_stop.Token);
                    await client.GetStream().WriteAsync(reply, _stop.Token);
                }
                catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException or IOException)
                {
                    if (_stop.IsCancellationRequested) return;
                }
            }
        });
    }

    /// <summary>TCP connections to the VIP from a shell in the test cgroup and namespace (as SocketHookTests' client): "ok REPLY" or the error.</summary>
    private List<string> Client(int connections)
    {
        const string script = """
            echo $$ > "$1/cgroup.procs" || exit 3
            exec nsenter --net="$2" bash -c '
              for i in $(seq 1 "$3"); do
                out=$( (exec 3<>"/dev/tcp/$1/$2" && read -r reply <&3 && echo "ok $reply") 2>&1 )
                echo "${out//$'"'"'\n'"'"'/ | }"
              done' client "$3" 80 "$4"
            """;
        var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in new[] { "-c", script, "wrapper", _cgroup.Path, _namespace.Path, Vip, connections.ToString(System.Globalization.CultureInfo.InvariantCulture) })
            start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromSeconds(30)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"the client did not finish in 30 s: {output.Result}");
        }
        Assert.True(process.ExitCode == 0, $"client exit {process.ExitCode}: {error.Result}");
        var lines = output.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries).ToList();
        Assert.Equal(connections, lines.Count);
        return lines;
    }

    private sealed class Disposer(Action action) : IDisposable
    {
        public void Dispose() => action();
    }

    /// <summary>
    /// A full plan is kept without its writes (at 50,000 services × 5 they are 550,000 objects nothing reads again), with
    /// their count; a partial plan with them; a failed full sync leaves none (the last one's state is let go at its start).
    /// </summary>
    [Fact]
    public async Task LastPlan_AFullOneWithoutItsWrites_APartialWithThem_NoneAfterAFailedFullSync()
    {
        using var metrics = new ProxyMetrics();
        var maps = new FailingMaps { FailAt = -1 };
        var backend = new EbpfBackend(maps, metrics, NullLogger.Instance);

        await backend.SyncAsync(StateBuilder.Full(State("10.244.1.1", "10.244.1.2")), default);
        Assert.True(backend.LastPlan!.Full);
        Assert.Empty(backend.LastPlan.Writes);
        Assert.Equal(5, backend.LastPlan.WriteCount); // two backends, two slots, the master
        Assert.Equal(3, backend.LastPlan.State.Maps.Services.Count);

        await backend.SyncAsync(StateBuilder.Partial(State("10.244.1.1"), StateBuilder.Name("web")), default);
        Assert.False(backend.LastPlan!.Full);
        Assert.StartsWith("service 10.96.0.10:80/tcp master count 1 ", backend.LastPlan.Writes[0].ToString(), StringComparison.Ordinal);
        Assert.Equal(["delete service 10.96.0.10:80/tcp slot 2", "delete backend 2"], backend.LastPlan.Writes.Skip(1).Select(w => w.ToString()));
        Assert.Equal(3, backend.LastPlan.WriteCount);

        maps.FailAt = maps.Written;
        await Assert.ThrowsAsync<BackendSyncException>(() => backend.SyncAsync(StateBuilder.Full(State("10.244.1.3")), default));
        Assert.Null(backend.LastPlan);
    }

    /// <summary>
    /// A full sync over maps of at least <see cref="EbpfBackend.CollectFullSyncEntries"/> entries collects garbage after it
    /// (a cold one too) and, when it read that many back, before it plans; a partial sync never, nor a full one over small maps.
    /// </summary>
    [Fact]
    public async Task FullSync_OverLargeMaps_CollectsBeforeThePlanAndAfter_NotPartialOrSmallOnes()
    {
        using var metrics = new ProxyMetrics();
        var logger = new ListLogger();
        var backend = new EbpfBackend(new FailingMaps { FailAt = -1 }, metrics, logger) { CollectFullSyncEntries = 5 };
        string[] Lines(string start) => [.. logger.Entries.Select(e => e.Message).Where(m => m.StartsWith(start, StringComparison.Ordinal))];

        await backend.SyncAsync(StateBuilder.Full(State("10.244.1.1", "10.244.1.2")), default); // 3 service entries, 2 backends
        Assert.Empty(Lines("Before the full eBPF plan")); // a cold sync: the maps were empty
        Assert.Matches(@"^After the full eBPF sync \(5 map entries\): heap \d+ → \d+ MiB, collected in [\d.]+ ms$", Assert.Single(Lines("After the full eBPF sync")));

        await backend.SyncAsync(StateBuilder.Partial(State("10.244.1.1", "10.244.1.2", "10.244.1.3"), StateBuilder.Name("web")), default);
        Assert.Single(Lines("After the full eBPF sync"));

        await backend.SyncAsync(StateBuilder.Full(State("10.244.1.1", "10.244.1.2", "10.244.1.3")), default);
        Assert.Matches(@"^Before the full eBPF plan \(7 map entries read\): heap \d+ → \d+ MiB, collected in [\d.]+ ms$", Assert.Single(Lines("Before the full eBPF plan")));
        Assert.Equal(2, Lines("After the full eBPF sync").Length);

        var small = new ListLogger();
        var defaults = new EbpfBackend(new FailingMaps { FailAt = -1 }, metrics, small);
        await defaults.SyncAsync(StateBuilder.Full(State("10.244.1.1", "10.244.1.2")), default);
        await defaults.SyncAsync(StateBuilder.Full(State("10.244.1.1", "10.244.1.2")), default);
        Assert.DoesNotContain(small.Entries, e => e.Message.Contains("eBPF plan", StringComparison.Ordinal) || e.Message.StartsWith("After", StringComparison.Ordinal));
    }

    [Fact]
    public void RunLength_SplitsThePlanByKind_AtMostMaxRun()
    {
        var backend = new BackendUpdate(1, default);
        var service = new ServiceUpdate(default, default, StateBuilder.Name("web"));
        MapWrite[] writes = [backend, backend, service, service, service, new ServiceDelete(default), service];
        var runs = new List<int>();
        for (var start = 0; start < writes.Length; start += runs[^1]) runs.Add(EbpfBackend.RunLength(writes, start));
        Assert.Equal([2, 3, 1, 1], runs);

        var many = Enumerable.Repeat<MapWrite>(service, EbpfBackend.MaxRun + 3).ToArray();
        Assert.Equal(EbpfBackend.MaxRun, EbpfBackend.RunLength(many, 0));
        Assert.Equal(3, EbpfBackend.RunLength(many, EbpfBackend.MaxRun));
    }

    /// <summary>
    /// Maps in memory that refuse write number <see cref="FailAt"/> (0-based) with E2BIG; <see cref="Batched"/> takes each run
    /// in one call as <see cref="EbpfKernel"/>'s batches do (stopping at the refused write), else the interface's one-by-one default.
    /// </summary>
    private sealed class FailingMaps : IEbpfMaps
    {
        private EbpfMapContents _contents = EbpfMapContents.Empty;
        private int _writes;

        public int FailAt { get; set; }

        public bool Batched { get; init; }

        public int Runs { get; private set; }

        public int Reads { get; private set; }

        /// <summary>How many writes were asked so far (refused ones included).</summary>
        public int Written => _writes;

        public EbpfMapContents Read()
        {
            Reads++;
            return _contents;
        }

        public void Write(MapWrite write)
        {
            if (_writes++ == FailAt) throw new BpfException(7, $"bpf(BPF_MAP_UPDATE_ELEM) on map {write.Map}", "the map is full (max_entries)");
            _contents = EbpfPlannerTests.Apply(_contents, [write]);
        }

        public int Write(ReadOnlySpan<MapWrite> writes, out BpfException? refused)
        {
            if (!Batched) return IEbpfMaps.OneByOne(this, writes, out refused);
            Runs++;
            refused = null;
            for (var i = 0; i < writes.Length; i++)
            {
                if (_writes++ == FailAt)
                {
                    refused = new BpfException(7, $"bpf(BPF_MAP_UPDATE_ELEM) on map {writes[i].Map}", "the map is full (max_entries)");
                    return i;
                }
                _contents = EbpfPlannerTests.Apply(_contents, [writes[i]]);
            }
            return writes.Length;
        }

        public bool Intact() => true;
    }
}
