using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Backends.Iptables.Tests;
using ProxyPlanes.Backends.Nftables.Tests;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.Netlink;
using ProxyPlanes.Netlink.Tests;

namespace ProxyPlanes.Backends.Ipvs.Tests;

/// <summary>
/// Tests that need IPVS in the kernel, each in network namespaces it creates: the netlink client,
/// the whole backend against the real kernel, and packets through a virtual server. This host has
/// no IPVS; the IPVS VM lane runs them:
/// <c>PROXYPLANES_IPVS_TESTS=1 dotnet test tests/Backends.Ipvs.Tests --filter Kernel=ipvs</c>.
/// With that variable set they run wherever they are, and fail with a clear message on a kernel
/// without IPVS; without it they run only where the kernel has IPVS, and are skipped elsewhere.
/// </summary>
[Trait("Kernel", "ipvs")]
[Collection(IpvsKernelCollection.Name)]
public sealed class IpvsKernelTests
{
    private static readonly IPAddress Vip = IPAddress.Parse("10.96.0.10");

    /// <summary>A namespace like a node's: lo up (IPVS refuses IPv4 destinations it cannot route as unicast otherwise).</summary>
    private static async Task<TestNamespace> NodeNamespaceAsync(string suffix)
    {
        var ns = new TestNamespace(suffix);
        await ns.ExecAsync("ip", "link", "set", "lo", "up");
        return ns;
    }

    /// <summary>Fails the test, saying why, when the kernel has no IPVS; otherwise opens the client in <paramref name="ns"/>.</summary>
    private static IpvsClient OpenIpvs(TestNamespace ns)
    {
        try
        {
            return ns.Run(IpvsClient.Open);
        }
        catch (GenericNetlinkFamilyNotFoundException e)
        {
            Assert.Fail($"This IPVS kernel test ran on a kernel without IPVS ({Environment.OSVersion}): {e.Message}. Run it in the IPVS VM lane.");
            throw;
        }
    }

    [IpvsFact]
    public async Task Client_ServiceAndDestinationLifecycle()
    {
        using var ns = await NodeNamespaceAsync("ipvs");
        using var ipvs = OpenIpvs(ns);
        var id = new IpvsServiceId(Vip, IpvsProtocol.TCP, 80);
        Assert.StartsWith("1.", ipvs.GetInfo().Version);

        ipvs.AddService(new IpvsService(id, "rr", LinuxUapi.IpVs.IP_VS_SVC_F_PERSISTENT, 600));
        var duplicate = Assert.Throws<NetlinkException>(() => ipvs.AddService(new IpvsService(id, "rr")));
        Assert.Equal("IPVS NEW_SERVICE 10.96.0.10:80/TCP: File exists (EEXIST)", duplicate.Message);

        ipvs.AddDestination(id, new IpvsDestination(IPAddress.Parse("10.244.1.2"), 8080, 1));
        ipvs.AddDestination(id, new IpvsDestination(IPAddress.Parse("10.244.1.3"), 8080, 1));
        ipvs.EditDestination(id, new IpvsDestination(IPAddress.Parse("10.244.1.3"), 8080, 0));

        var service = Assert.Single(ipvs.ListServices());
        Assert.Equal(new IpvsService(id, "rr", LinuxUapi.IpVs.IP_VS_SVC_F_PERSISTENT, 600), service);
        Assert.Equal(service, ipvs.GetService(id));
        Assert.Equal(["10.244.1.2:8080 weight 1", "10.244.1.3:8080 weight 0"], ipvs.ListDestinations(id).Select(d => d.ToString()).Order());

        ipvs.DeleteDestination(id, IPAddress.Parse("10.244.1.3"), 8080);
        ipvs.EditService(new IpvsService(id, "wlc"));
        Assert.Equal("wlc", ipvs.ListServices()[0].Scheduler);
        Assert.False(ipvs.ListServices()[0].Persistent);

        ipvs.DeleteService(id);
        Assert.Empty(ipvs.ListServices());
        var missing = Assert.Throws<NetlinkException>(() => ipvs.DeleteService(id));
        Assert.Equal(LinuxUapi.Errno.ESRCH, missing.Errno);
        Assert.Empty(ipvs.ListDestinations(id)); // the kernel's dump of a missing service is empty
        Assert.Null(ipvs.GetService(id)); // only a GET tells a missing service apart (the IPVS canary)
    }

    [IpvsFact]
    public async Task Client_IPv6AndUdpAndBatch()
    {
        using var ns = await NodeNamespaceAsync("ipvs");
        using var ipvs = OpenIpvs(ns);
        var ids = Enumerable.Range(1, 300).Select(i => new IpvsServiceId(IPAddress.Parse($"fd00:10:96::{i:x}"), i % 2 == 0 ? IpvsProtocol.UDP : IpvsProtocol.TCP, 53)).ToList();

        ipvs.Apply(ids.SelectMany(id => new[]
        {
            ipvs.NewService(new IpvsService(id, "rr")),
            ipvs.NewDestination(id, new IpvsDestination(IPAddress.Parse("fd00:10:244::2"), 5353, 1)),
        }).ToList());

        Assert.Equal(ids.Select(id => id.ToString()).Order(), ipvs.ListServices().Select(s => s.Id.ToString()).Order());
        Assert.Equal("[fd00:10:244::2]:5353 weight 1", Assert.Single(ipvs.ListDestinations(ids[41])).ToString());
    }

    [IpvsFact]
    public async Task Backend_FullAndPartialSyncs_MatchThePlanInTheKernel()
    {
        using var ns = await NodeNamespaceAsync("ipvs");
        using var _ = OpenIpvs(ns);
        using var kernel = KernelIn(ns);
        using var metrics = new ProxyMetrics();
        var backend = new IpvsBackend(kernel, metrics, NullLogger.Instance, [IpFamily.IPv4, IpFamily.IPv6]);
        var (initial, update) = await new GoldenCase("endpoint-removed").SyncRequestsAsync();

        await backend.SyncAsync(initial, default);
        await AssertKernelMatchesAsync(ns, kernel, backend.LastPlan!);
        Assert.Contains("dummy", await ns.ExecAsync("ip", "-d", "link", "show", IpvsNames.Link));

        await backend.SyncAsync(update!, default);
        Assert.False(backend.LastPlan!.Full);
        await AssertKernelMatchesAsync(ns, kernel, backend.LastPlan!);

        // A full sync over the same kernel has nothing to correct but the helper rules it always restores.
        await backend.SyncAsync(update! with { Full = true }, default);
        Assert.All(backend.LastPlan!.Operations, o => Assert.IsType<IptablesRestore>(o));

        await backend.CleanupAsync(default);
        var view = await kernel.ReadAsync([IpFamily.IPv4, IpFamily.IPv6], default);
        Assert.False(view.LinkExists);
        Assert.Empty(view.Services);
        Assert.Empty(view.Ipsets);
        Assert.DoesNotContain("KUBE-", await kernel.SaveIptablesAsync(IpFamily.IPv4, "nat", default));
    }

    [IpvsFact]
    public async Task Backend_RandomChanges_KernelAlwaysMatchesTheFake()
    {
        using var ns = await NodeNamespaceAsync("ipvs");
        using var _ = OpenIpvs(ns);
        using var kernel = KernelIn(ns);
        using var metrics = new ProxyMetrics();
        var nodeAddresses = (await kernel.ReadAsync([IpFamily.IPv4], default)).NodeAddresses.ToArray();
        var fake = new FakeIpvsKernel(nodeAddresses);
        var real = new IpvsBackend(kernel, metrics, NullLogger.Instance, [IpFamily.IPv4, IpFamily.IPv6]);
        var model = new IpvsBackend(fake, metrics, NullLogger.Instance, [IpFamily.IPv4, IpFamily.IPv6]);
        var cluster = new RandomCluster(3);
        DesiredState? previous = null;

        for (var step = 0; step < 25; step++)
        {
            cluster.Mutate();
            var state = cluster.State(StateBuilder.Network);
            var request = previous is null || step % 10 == 0 ? StateBuilder.Full(state) : new SyncRequest(state, false, StateBuilder.Changed(previous, state));
            await real.SyncAsync(request, default);
            await model.SyncAsync(request, default);
            Assert.Equal(Servers(await fake.ReadAsync([IpFamily.IPv4, IpFamily.IPv6], default)), Servers(await kernel.ReadAsync([IpFamily.IPv4, IpFamily.IPv6], default)));
            previous = state;
        }
        await real.CleanupAsync(default);
    }

    /// <summary>
    /// Real packets: the node namespace connects to a cluster IP whose one endpoint is a pod
    /// namespace; a port of the cluster IP without a virtual server, and a service without
    /// endpoints, are refused at once.
    /// </summary>
    [IpvsFact]
    public async Task Traffic_ThroughAVirtualServer_ReachesThePod_AndNoEndpointsIsRefused()
    {
        using var node = await NodeNamespaceAsync("ipvs");
        using var pod = new TestNamespace("pod");
        using var _ = OpenIpvs(node);
        await node.ExecAsync("ip", "link", "add", "vpod0", "type", "veth", "peer", "name", "eth0", "netns", pod.Name);
        await node.ExecAsync("ip", "addr", "add", "10.244.1.1/24", "dev", "vpod0");
        await node.ExecAsync("ip", "link", "set", "vpod0", "up");
        await pod.ExecAsync("ip", "link", "set", "lo", "up");
        await pod.ExecAsync("ip", "addr", "add", "10.244.1.2/24", "dev", "eth0");
        await pod.ExecAsync("ip", "link", "set", "eth0", "up");
        await pod.ExecAsync("ip", "route", "add", "default", "via", "10.244.1.1");
        using var listener = pod.Run(() =>
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            socket.Bind(new IPEndPoint(IPAddress.Any, 8080));
            socket.Listen();
            return socket;
        });
        var serve = Task.Run(async () =>
        {
            while (true)
            {
                using var connection = await listener.AcceptAsync();
                var remote = (IPEndPoint)connection.RemoteEndPoint!;
                await connection.SendAsync(Encoding.ASCII.GetBytes($"pod saw {remote.Address}"));
            }
        });

        using var kernel = KernelIn(node);
        using var metrics = new ProxyMetrics();
        var backend = new IpvsBackend(kernel, metrics, NullLogger.Instance);
        var web = StateBuilder.Port(StateBuilder.Info("web", "10.96.0.10"), StateBuilder.Endpoint("10.244.1.2"));
        var empty = StateBuilder.Port(StateBuilder.Info("empty", "10.96.0.20"));
        await backend.SyncAsync(StateBuilder.Full(StateBuilder.State(StateBuilder.Network, web, empty)), default);

        Assert.StartsWith("pod saw ", await RequestAsync(node, "10.96.0.10", 80));
        Assert.Equal("refused", await RequestAsync(node, "10.96.0.20", 80));
        Assert.Equal("refused", await RequestAsync(node, "10.96.0.10", 81));
        Assert.False(serve.IsFaulted, serve.Exception?.ToString());

        // Graceful termination: the endpoint goes while IPVS still tracks its connections (closing
        // ones count): it stays at weight 0, and new connections find no destination.
        var key = new VirtualServerKey(Vip, Protocol.TCP, 80);
        var withoutEndpoint = StateBuilder.State(StateBuilder.Network, StateBuilder.Port(StateBuilder.Info("web", "10.96.0.10")), empty);
        await backend.SyncAsync(StateBuilder.Partial(withoutEndpoint, StateBuilder.Name("web")), default);
        var draining = Assert.Single((await kernel.ReadDestinationsAsync([key], default))[key]);
        Assert.Equal(0, draining.Weight);
        Assert.True(draining.Connections > 0);
        Assert.Equal(1, backend.LastPlan!.State.DrainingCount);
        Assert.Equal("refused", await RequestAsync(node, "10.96.0.10", 80));
        await backend.CleanupAsync(default);
    }

    [IpvsFact]
    public async Task Timeouts_SetConfig_ReadBackByGetConfigAndIpvsadm_ZeroKeepsOne()
    {
        using var ns = await NodeNamespaceAsync("ipvs-timeouts");
        using var kernel = KernelIn(ns);
        using var ipvs = OpenIpvs(ns); // fails clearly without IPVS
        var before = await kernel.GetTimeoutsAsync(default);
        var wanted = new IpvsTimeouts(before.TcpSeconds + 600, 0, before.UdpSeconds + 45);

        await kernel.SetTimeoutsAsync(wanted, default);

        var after = await kernel.GetTimeoutsAsync(default);
        Assert.NotEqual(before, after); // positive control: the kernel's own values were others
        Assert.Equal(new IpvsTimeouts(wanted.TcpSeconds, before.TcpFinSeconds, wanted.UdpSeconds), after);
        Assert.Equal(after, ipvs.GetTimeouts());
        // ipvsadm (from the ipvsadm package) reads the same values from the kernel, its own way.
        if (File.Exists("/usr/sbin/ipvsadm") || File.Exists("/sbin/ipvsadm"))
            Assert.Contains($"Timeout (tcp tcpfin udp): {after.TcpSeconds} {after.TcpFinSeconds} {after.UdpSeconds}", await ns.ExecAsync("ipvsadm", "-L", "--timeout"));
    }

    [IpvsFact]
    public async Task Backend_WithTimeoutsAndStrictArp_AppliesThemInItsNamespaceAtTheFirstSync()
    {
        using var ns = await NodeNamespaceAsync("ipvs-settings");
        using var kernel = KernelIn(ns);
        await ns.ExecAsync("sysctl", "-w", "net.ipv4.conf.all.arp_ignore=0", "net.ipv4.conf.all.arp_announce=0");
        var before = await kernel.GetTimeoutsAsync(default);
        using var metrics = new ProxyMetrics();
        var options = new ProxyModeOptions
        {
            IpvsStrictArp = true,
            IpvsTimeouts = new IpvsTimeoutSettings(TimeSpan.FromSeconds(before.TcpSeconds + 60), TimeSpan.FromSeconds(before.TcpFinSeconds + 5), TimeSpan.Zero),
        };
        var backend = IpvsBackend.Create(options, kernel, [IpFamily.IPv4], metrics, NullLogger.Instance);

        await backend.SyncAsync(StateBuilder.Full(StateBuilder.State(StateBuilder.Network, StateBuilder.Port(StateBuilder.Info("web", "10.96.0.10"), StateBuilder.Endpoint("10.244.1.2")))), default);

        Assert.Equal(new IpvsTimeouts(before.TcpSeconds + 60, before.TcpFinSeconds + 5, before.UdpSeconds), await kernel.GetTimeoutsAsync(default));
        Assert.Equal(["1", "2"], (await ns.ExecAsync("sysctl", "-n", "net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce")).Split('\n', StringSplitOptions.RemoveEmptyEntries));
        await backend.CleanupAsync(default);
    }

    private static async Task<string> RequestAsync(TestNamespace from, string address, int port)
    {
        using var socket = from.Run(() => new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp));
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(3));
        try
        {
            await socket.ConnectAsync(IPAddress.Parse(address), port, timeout.Token);
            var buffer = new byte[256];
            var received = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
            return Encoding.ASCII.GetString(buffer, 0, received);
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
        {
            return "refused";
        }
        catch (OperationCanceledException)
        {
            return "no answer";
        }
    }

    private static IpvsKernel KernelIn(TestNamespace ns) => new(new IpvsKernelOptions
    {
        CommandPrefix = ["ip", "netns", "exec", ns.Name],
        InNamespace = action => ns.Namespace.Run(action),
    });

    private static List<string> Servers(IpvsKernelView view) =>
        view.Services.OrderBy(s => s.Key).SelectMany(s => s.Value.Destinations.OrderBy(d => d.Key).Select(d => $"{s.Value.Definition.Key.IpvsadmService} {s.Value.Definition.IpvsadmOptions} -> {d.Key} {d.Weight}")
            .DefaultIfEmpty($"{s.Value.Definition.Key.IpvsadmService} {s.Value.Definition.IpvsadmOptions}")).ToList();

    private static async Task AssertKernelMatchesAsync(TestNamespace ns, IpvsKernel kernel, IpvsPlan plan)
    {
        var view = await kernel.ReadAsync([IpFamily.IPv4, IpFamily.IPv6], default);
        Assert.Equal(plan.State.Kernel.Keys.Order().ToList(), view.Services.Keys.Order().ToList());
        foreach (var (key, applied) in plan.State.Kernel)
        {
            Assert.Equal(applied.Definition, view.Services[key].Definition);
            Assert.Equal(applied.Destinations.Select(d => $"{d.Key} {d.Value.Weight}"), view.Services[key].Destinations.OrderBy(d => d.Key).Select(d => $"{d.Key} {d.Weight}"));
        }
        Assert.Equal(plan.State.Addresses.Keys.Order(IpvsText.AddressComparer).ToList(), view.LinkAddresses.Order(IpvsText.AddressComparer).ToList());
        using var json = JsonDocument.Parse(await ns.ExecAsync("ip", "-j", "addr", "show", "dev", IpvsNames.Link));
        Assert.Equal(view.LinkAddresses.Count, json.RootElement[0].GetProperty("addr_info").GetArrayLength());
        foreach (var (set, entries) in view.Ipsets)
            Assert.Equal(plan.State.Entries.Keys.Concat(plan.State.NameEntries).Where(e => e.Set == set).Select(e => e.Entry).Order(StringComparer.Ordinal), entries.Order(StringComparer.Ordinal));
    }
}

/// <summary>
/// A fact that needs IPVS: it runs when PROXYPLANES_IPVS_TESTS=1 (the IPVS VM lane; it then fails
/// clearly on a kernel without IPVS) or when this kernel is built with IPVS; it is skipped elsewhere.
/// </summary>
public sealed class IpvsFactAttribute : FactAttribute
{
    public const string Variable = "PROXYPLANES_IPVS_TESTS";

    public IpvsFactAttribute()
    {
        if (Environment.GetEnvironmentVariable(Variable) == "1" || KernelHasIpvs()) return;
        Skip = $"needs a kernel with IPVS (this one has none): runs in the IPVS VM lane, {Variable}=1 dotnet test tests/Backends.Ipvs.Tests --filter Kernel=ipvs";
    }

    /// <summary>IPVS is loaded, built in, or a module of the running kernel (/proc/config.gz is often absent).</summary>
    public static bool KernelHasIpvs()
    {
        if (KernelConfig.Has("CONFIG_IP_VS") == true || Directory.Exists("/sys/module/ip_vs") || File.Exists("/proc/net/ip_vs")) return true;
        try
        {
            var modules = Path.Combine("/lib/modules", File.ReadAllText("/proc/sys/kernel/osrelease").Trim());
            return new[] { "modules.builtin", "modules.dep" }.Select(f => Path.Combine(modules, f)).Where(File.Exists)
                .Any(f => File.ReadLines(f).Any(l => l.Split(':', 2)[0].EndsWith("/ip_vs.ko", StringComparison.Ordinal) || l.Split(':', 2)[0].Contains("/ip_vs.ko.", StringComparison.Ordinal)));
        }
        catch (IOException)
        {
            return false;
        }
    }
}

/// <summary>A fact about a kernel without IPVS: skipped, saying so, where the kernel has IPVS (IpvsKernelTests cover that kernel).</summary>
public sealed class NoIpvsFactAttribute : FactAttribute
{
    public NoIpvsFactAttribute()
    {
        if (IpvsFactAttribute.KernelHasIpvs()) Skip = "needs a kernel without IPVS; this one has IPVS (IpvsKernelTests cover it)";
    }
}
