using System.Collections.Immutable;
using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;
using ProxyPlanes.NodeTools.Conntrack;
using ProxyPlanes.Sandbox;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// <see cref="ConntrackCommand"/> against the real conntrack table of a sandbox node: DNAT rules installed by hand in
/// the node namespace create UDP (and TCP) flows, the planned deletions run there through <c>ip netns exec</c>, and
/// only the stale flows disappear. Everything lives in the sandbox's namespaces, which disposal deletes (rules,
/// conntrack table and all).
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class ConntrackTests
{
    private const string Vip = "10.96.0.50";
    private const string OtherVip = "10.96.0.51";
    private const string VipV6 = "fd00:10:96::50";
    private const int ServicePort = 53;
    private const int NodePort = 30053;
    private const int PodPort = 8080; // the sandbox's default pod port: busybox httpd plus the UDP responder
    private static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(3);
    private static readonly ServicePortName Dns = new(new NamespacedName("kube-system", "dns"), "dns", Protocol.UDP);

    [Fact]
    public async Task DeleteAsync_EndpointRemoved_DeletesOnlyItsUdpFlows()
    {
        await using var sandbox = await CreateSandboxAsync();
        var web0 = sandbox.Pods["web-0"];
        var web1 = sandbox.Pods["web-1"];
        var second = await sandbox.AddExternalClientAsync("second");

        // The primary client is sent to web-0 and the second one to web-1, through the same VIP: deleting web-0's flows
        // must keep web-1's. The node port goes to web-0, TCP to the VIP goes to web-0 too, and another VIP to web-0.
        await DnatAsync(sandbox, "-p", "udp", "-s", sandbox.ClientIp, "-d", Vip, "--dport", $"{ServicePort}", "--to-destination", $"{web0.IP}:{PodPort}");
        await DnatAsync(sandbox, "-p", "udp", "-s", second.IP, "-d", Vip, "--dport", $"{ServicePort}", "--to-destination", $"{web1.IP}:{PodPort}");
        await DnatAsync(sandbox, "-p", "udp", "-d", sandbox.NodeIp, "--dport", $"{NodePort}", "--to-destination", $"{web0.IP}:{PodPort}");
        await DnatAsync(sandbox, "-p", "tcp", "-d", Vip, "--dport", $"{ServicePort}", "--to-destination", $"{web0.IP}:{PodPort}");
        await DnatAsync(sandbox, "-p", "udp", "-d", OtherVip, "--dport", $"{ServicePort}", "--to-destination", $"{web0.IP}:{PodPort}");

        await ExpectUdpAnswerAsync(sandbox.Client, Vip, ServicePort, web0.ExpectedWho(sandbox.ClientIp));
        await ExpectUdpAnswerAsync(second.Namespace, Vip, ServicePort, web1.ExpectedWho(second.IP));
        await ExpectUdpAnswerAsync(sandbox.Client, sandbox.NodeIp, NodePort, web0.ExpectedWho(sandbox.ClientIp));
        await ExpectUdpAnswerAsync(sandbox.Client, OtherVip, ServicePort, web0.ExpectedWho(sandbox.ClientIp));
        var tcp = await sandbox.Client.HttpGetAsync(Vip, ServicePort, "/cgi-bin/who", ProbeTimeout);
        Assert.True(tcp.IsAnswered, tcp.ToString());

        var before = await ListFlowsAsync(sandbox, "ipv4");
        Assert.Single(before, f => IsUdp(f) && To(f, Vip, ServicePort) && From(f, web0.IP));
        Assert.Single(before, f => IsUdp(f) && To(f, Vip, ServicePort) && From(f, web1.IP));
        Assert.Single(before, f => IsUdp(f) && To(f, sandbox.NodeIp, NodePort) && From(f, web0.IP));
        Assert.Single(before, f => IsUdp(f) && To(f, OtherVip, ServicePort) && From(f, web0.IP));
        Assert.Single(before, f => f.StartsWith("tcp ", StringComparison.Ordinal) && To(f, Vip, ServicePort) && From(f, web0.IP));

        // web-0 leaves the service: its flows through the VIP and the node port are stale.
        var previous = State(Service([Vip], NodePort, $"{web0.IP}:{PodPort}", $"{web1.IP}:{PodPort}"));
        var current = State(Service([Vip], NodePort, $"{web1.IP}:{PodPort}"));
        var plan = StaleConntrackPlanner.Plan(previous, current);
        Assert.Equal(2, plan.Count);

        var deleted = await NodeConntrack(sandbox).DeleteAsync(plan, CancellationToken.None);

        Assert.Equal(2, deleted); // the kernel's own count: web-0's VIP flow and its node port flow
        var after = await ListFlowsAsync(sandbox, "ipv4");
        Assert.DoesNotContain(after, f => IsUdp(f) && To(f, Vip, ServicePort) && From(f, web0.IP));
        Assert.DoesNotContain(after, f => IsUdp(f) && To(f, sandbox.NodeIp, NodePort));
        Assert.Single(after, f => IsUdp(f) && To(f, Vip, ServicePort) && From(f, web1.IP));
        Assert.Single(after, f => IsUdp(f) && To(f, OtherVip, ServicePort) && From(f, web0.IP));
        Assert.Single(after, f => f.StartsWith("tcp ", StringComparison.Ordinal) && To(f, Vip, ServicePort) && From(f, web0.IP));

        // Running the same plan again matches nothing, which conntrack reports as exit code 1: still a success.
        Assert.Equal(0, await NodeConntrack(sandbox).DeleteAsync(plan, CancellationToken.None));
    }

    [Fact]
    public async Task DeleteAsync_Ipv6ServiceRemoved_DeletesIpv6FlowsOnly()
    {
        await using var sandbox = await CreateSandboxAsync();
        var web0 = sandbox.Pods["web-0"];
        await DnatAsync(sandbox, "-p", "udp", "-d", Vip, "--dport", $"{ServicePort}", "--to-destination", $"{web0.IP}:{PodPort}");
        await sandbox.Node.CheckedExecAsync(
            "ip6tables-nft", "-t", "nat", "-A", "PREROUTING", "-p", "udp", "-d", VipV6, "--dport", $"{ServicePort}",
            "-j", "DNAT", "--to-destination", $"[{web0.IPv6}]:{PodPort}");

        await ExpectUdpAnswerAsync(sandbox.Client, VipV6, ServicePort, web0.ExpectedWho(sandbox.ClientIpv6));
        await ExpectUdpAnswerAsync(sandbox.Client, Vip, ServicePort, web0.ExpectedWho(sandbox.ClientIp));
        Assert.Single(await ListFlowsAsync(sandbox, "ipv6"), f => IsUdp(f) && To(f, VipV6, ServicePort) && From(f, web0.IPv6));

        var previous = State(Service([VipV6], 0, $"[{web0.IPv6}]:{PodPort}"));
        var plan = StaleConntrackPlanner.Plan(previous, DesiredState.Empty);
        Assert.Equal(IpFamily.IPv6, Assert.Single(plan).Family);

        await NodeConntrack(sandbox).DeleteAsync(plan, CancellationToken.None);

        Assert.DoesNotContain(await ListFlowsAsync(sandbox, "ipv6"), f => IsUdp(f) && To(f, VipV6, ServicePort));
        Assert.Single(await ListFlowsAsync(sandbox, "ipv4"), f => IsUdp(f) && To(f, Vip, ServicePort) && From(f, web0.IP));
    }

    [Fact]
    public async Task CleanAsync_ConntrackFails_CountsAndDoesNotThrow()
    {
        await using var sandbox = await CreateSandboxAsync();
        var gone = $"{sandbox.Prefix}-nosuchns";
        var failing = new ConntrackCommand(commandPrefix: ["ip", "netns", "exec", gone]);
        var cleaner = new ConntrackCleaner(failing, NullLogger.Instance);
        var previous = State(Service([Vip], 0, $"{sandbox.Pods["web-0"].IP}:{PodPort}"));

        var thrown = await Assert.ThrowsAsync<CommandException>(
            () => failing.DeleteAsync(StaleConntrackPlanner.Plan(previous, DesiredState.Empty), CancellationToken.None));
        await cleaner.CleanAsync(previous, DesiredState.Empty, CancellationToken.None);

        Assert.Contains($"ip netns exec {gone} conntrack -D -p udp --orig-dst {Vip} --orig-port-dst {ServicePort}", thrown.Message, StringComparison.Ordinal);
        Assert.Equal(1, cleaner.Failures);
    }

    private static async Task<ClusterSandbox> CreateSandboxAsync()
    {
        var sandbox = await ClusterSandbox.CreateAsync();
        try
        {
            await sandbox.AddPodAsync("web-0");
            await sandbox.AddPodAsync("web-1");
            return sandbox;
        }
        catch
        {
            await sandbox.DisposeAsync();
            throw;
        }
    }

    /// <summary>The applier under test, running conntrack inside the sandbox node (the test-only command prefix).</summary>
    private static ConntrackCommand NodeConntrack(ClusterSandbox sandbox) =>
        new(commandPrefix: ["ip", "netns", "exec", sandbox.Node.Name]);

    private static Task DnatAsync(ClusterSandbox sandbox, params string[] match) =>
        sandbox.Node.CheckedExecAsync(
            ["iptables-nft", "-t", "nat", "-A", "PREROUTING", .. match[..^2], "-j", "DNAT", .. match[^2..]],
            timeout: null);

    private static async Task ExpectUdpAnswerAsync(NetworkNamespace from, string ip, int port, string expected)
    {
        var result = await from.UdpRequestAsync(ip, port, "hello", ProbeTimeout);
        Assert.True(result.IsAnswered, $"{ip}:{port}: {result}");
        Assert.Equal(expected, result.Text);
    }

    /// <summary>The node's conntrack table for one family, one flow per line (<c>conntrack -L</c> writes them to stdout).</summary>
    private static async Task<string[]> ListFlowsAsync(ClusterSandbox sandbox, string family)
    {
        var list = await sandbox.Node.CheckedExecAsync(["conntrack", "-L", "-f", family], TimeSpan.FromSeconds(10));
        return list.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
    }

    private static bool IsUdp(string flow) => flow.StartsWith("udp ", StringComparison.Ordinal);

    /// <summary>The original direction (the first dst/dport pair) goes to <paramref name="ip"/>:<paramref name="port"/>.</summary>
    private static bool To(string flow, string ip, int port)
    {
        var fields = flow.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return fields.FirstOrDefault(f => f.StartsWith("dst=", StringComparison.Ordinal)) == $"dst={ip}"
            && fields.FirstOrDefault(f => f.StartsWith("dport=", StringComparison.Ordinal)) == $"dport={port}";
    }

    /// <summary>The reply direction (the second src/sport pair) comes from <paramref name="ip"/>:<see cref="PodPort"/>.</summary>
    private static bool From(string flow, string ip)
    {
        var fields = flow.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return fields.Where(f => f.StartsWith("src=", StringComparison.Ordinal)).ElementAtOrDefault(1) == $"src={ip}"
            && fields.Where(f => f.StartsWith("sport=", StringComparison.Ordinal)).ElementAtOrDefault(1) == $"sport={PodPort}";
    }

    private static ServicePortState Service(string[] clusterIPs, int nodePort, params string[] endpoints)
    {
        var info = new ServicePortInfo
        {
            Name = Dns,
            Port = ServicePort,
            ClusterIPs = new EquatableArray<IPAddress>(clusterIPs.Select(IPAddress.Parse)),
            NodePort = nodePort,
        };
        var eps = new EquatableArray<EndpointInfo>(endpoints.Select(e => IPEndPoint.Parse(e)).Select(e => new EndpointInfo(e.Address, e.Port)).Order());
        return EndpointCategorizer.Decided(info, EndpointsOf(eps, IpFamily.IPv4), EndpointsOf(eps, IpFamily.IPv6));
    }

    /// <summary>The endpoints of one family, all of them serving cluster traffic (policy is not what is tested here).</summary>
    private static EndpointSet EndpointsOf(EquatableArray<EndpointInfo> endpoints, IpFamily family)
    {
        var ofFamily = new EquatableArray<EndpointInfo>(endpoints.Where(e => e.Family == family));
        return new EndpointSet(ofFamily, ofFamily, EquatableArray<EndpointInfo>.Empty) { HasAnyEndpoints = !ofFamily.IsEmpty };
    }

    private static DesiredState State(params ServicePortState[] ports) =>
        new(ports.ToImmutableSortedDictionary(p => p.Name, p => p), new NodeNetwork());
}
