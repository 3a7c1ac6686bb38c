using ProxyPlanes.Sandbox;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// Real packets through the real rules: the proxyplanes binary programs iptables in the node
/// namespace; clients, the node and pods send requests; the tests check who answered and which
/// source address the pod saw.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class IptablesTrafficTests
{
    private const string WebIP = "10.96.0.10";

    private static async Task<ProxyScenario> StartWebAsync(int pods = 3, string type = "ClusterIP", IEnumerable<string>? extraArgs = null)
    {
        var scenario = await ProxyScenario.CreateAsync(pods);
        try
        {
            scenario.WriteManifest("web.yaml", ProxyScenario.Service("web", WebIP, type: type, nodePort: type == "NodePort" ? 30080 : 0));
            scenario.WriteManifest("web-endpoints.yaml", ProxyScenario.Slice("web", Enumerable.Range(0, pods).Select(scenario.PodIp).ToArray()));
            await scenario.StartProxyAsync(extraArgs);
            return scenario;
        }
        catch
        {
            await scenario.DisposeAsync();
            throw;
        }
    }

    [Fact]
    public async Task ClusterIP_FromClient_SpreadsOverAllEndpoints()
    {
        await using var scenario = await StartWebAsync();

        var answers = await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80);

        Assert.Equal(["pod-0", "pod-1", "pod-2"], answers.Keys.Order());
    }

    [Fact]
    public async Task NodePort_FromClient_ReachesEndpoints()
    {
        await using var scenario = await StartWebAsync(type: "NodePort");

        var answers = await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, scenario.Sandbox.NodeIp, 30080);

        Assert.Equal(["pod-0", "pod-1", "pod-2"], answers.Keys.Order());
    }

    [Fact]
    public async Task NodePort_WithNodePortAddressesMatchingNode_IsOpenOnThatAddress()
    {
        await using var scenario = await StartWebAsync(type: "NodePort", extraArgs: ["--nodeport-addresses=203.0.113.0/24"]);

        var answers = await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, scenario.Sandbox.NodeIp, 30080);

        Assert.Equal(["pod-0", "pod-1", "pod-2"], answers.Keys.Order());
    }

    [Fact]
    public async Task NodePort_WithNodePortAddressesElsewhere_IsNotOpen()
    {
        // Node ports open only on node addresses inside --nodeport-addresses.
        await using var scenario = await StartWebAsync(type: "NodePort", extraArgs: ["--nodeport-addresses=192.0.2.0/24"]);

        var result = await scenario.Sandbox.Client.HttpGetAsync(scenario.Sandbox.NodeIp, 30080, "/cgi-bin/who", TimeSpan.FromSeconds(2));

        Assert.False(result.IsAnswered, result.ToString());
        Assert.True(result.Outcome == ProbeOutcome.Refused, result.ToString()); // nothing listens on the node itself
    }

    [Fact]
    public async Task HealthCheckNodePort_OnNodeWhoseInputDropsByDefault_IsAccepted()
    {
        // In iptables mode the proxy shares the filter table with the node's own firewall, so it
        // accepts health-check node ports there (kube-proxy's KUBE-NODEPORTS rule). In nftables an
        // accept in our table cannot override another table's drop: this is iptables-only.
        await using var scenario = await ProxyScenario.CreateAsync(pods: 1);
        foreach (var rule in new[] { "-A INPUT -i lo -j ACCEPT", "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT", "-P INPUT DROP" })
            await scenario.Sandbox.Node.CheckedExecAsync(["iptables-nft", .. rule.Split(' ')]);
        scenario.WriteManifest("web.yaml", ProxyScenario.Service("web", WebIP, type: "NodePort", nodePort: 30080, extraSpec: "  externalTrafficPolicy: Local\n  healthCheckNodePort: 32080"));
        scenario.WriteManifest("web-endpoints.yaml", ProxyScenario.Slice("web", scenario.PodIp(0)));
        await scenario.StartProxyAsync(["--iptables-variant=nft"]);

        var health = await scenario.Sandbox.Client.HttpGetAsync(scenario.Sandbox.NodeIp, 32080, "/", TimeSpan.FromSeconds(3));

        Assert.Equal(200, health.StatusCode);
        Assert.Contains("\"localEndpoints\": 1", health.Body);
    }

    [Fact]
    public async Task ClusterIP_FromNodeItself_ReachesEndpoints()
    {
        await using var scenario = await StartWebAsync();

        var answers = await ProxyScenario.SpreadAsync(scenario.Sandbox.Node, WebIP, 80, count: 30);

        Assert.Equal(["pod-0", "pod-1", "pod-2"], answers.Keys.Order());
    }

    [Fact]
    public async Task ClusterIP_WithoutEndpoints_IsRefusedAtOnce()
    {
        await using var scenario = await ProxyScenario.CreateAsync(pods: 1);
        scenario.WriteManifest("lonely.yaml", ProxyScenario.Service("lonely", "10.96.0.30", type: "NodePort", nodePort: 30090) + "\n---\n" + ProxyScenario.Slice("lonely"));
        await scenario.StartProxyAsync();

        var viaClusterIP = await scenario.Sandbox.Client.HttpGetAsync("10.96.0.30", 80, "/", TimeSpan.FromSeconds(5));
        var viaNodePort = await scenario.Sandbox.Client.HttpGetAsync(scenario.Sandbox.NodeIp, 30090, "/", TimeSpan.FromSeconds(5));
        var fromNode = await scenario.Sandbox.Node.HttpGetAsync("10.96.0.30", 80, "/", TimeSpan.FromSeconds(5));

        foreach (var result in new[] { viaClusterIP, viaNodePort, fromNode })
        {
            Assert.Equal(ProbeOutcome.Refused, result.Outcome);
            Assert.True(result.Elapsed < TimeSpan.FromSeconds(2), $"refusal took {result.Elapsed}");
        }
    }

    [Fact]
    public async Task Masquerade_OffClusterSource_IsMasqueradedButPodToPodIsNot()
    {
        await using var scenario = await StartWebAsync(pods: 2);
        var gateway = scenario.Sandbox.NodePodGatewayIp; // the node's address on pod links

        // Off-cluster client: masqueraded, so the pod sees the node.
        var fromClient = await scenario.Sandbox.Client.HttpGetAsync(WebIP, 80, "/cgi-bin/who", TimeSpan.FromSeconds(3));
        Assert.Equal(gateway, ProxyScenario.Who(fromClient.Body).Source);

        // Pod to another pod through the VIP: keeps its source.
        var pod0 = scenario.Sandbox.Pods["pod-0"].Namespace;
        var sawPod = false;
        var sawHairpin = false;
        for (var i = 0; i < 40 && !(sawPod && sawHairpin); i++)
        {
            var who = ProxyScenario.Who((await pod0.HttpGetAsync(WebIP, 80, "/cgi-bin/who", TimeSpan.FromSeconds(3))).Body);
            if (who.Pod == "pod-1") { Assert.Equal(scenario.PodIp(0), who.Source); sawPod = true; }
            // Hairpin: a pod reaching itself through its service is masqueraded, or its reply would skip un-DNAT.
            if (who.Pod == "pod-0") { Assert.Equal(gateway, who.Source); sawHairpin = true; }
        }
        Assert.True(sawPod && sawHairpin, "both endpoints should have answered pod-0");
    }

    [Fact]
    public async Task MasqueradeAll_PodToPod_IsMasqueraded()
    {
        await using var scenario = await StartWebAsync(pods: 2, extraArgs: ["--masquerade-all"]);

        var pod0 = scenario.Sandbox.Pods["pod-0"].Namespace;
        for (var i = 0; i < 10; i++)
        {
            var who = ProxyScenario.Who((await pod0.HttpGetAsync(WebIP, 80, "/cgi-bin/who", TimeSpan.FromSeconds(3))).Body);
            Assert.Equal(scenario.Sandbox.NodePodGatewayIp, who.Source);
        }
    }

    [Fact]
    public async Task EndpointRemovedFromManifest_StopsReceivingTraffic_OtherServiceUntouched()
    {
        await using var scenario = await StartWebAsync();
        await scenario.WriteManifestAndSyncAsync("api.yaml", ProxyScenario.Service("api", "10.96.0.11") + "\n---\n" + ProxyScenario.Slice("api", scenario.PodIp(2)));

        await scenario.WriteManifestAndSyncAsync("web-endpoints.yaml", ProxyScenario.Slice("web", scenario.PodIp(0), scenario.PodIp(2)));

        var answers = await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80);
        Assert.Equal(["pod-0", "pod-2"], answers.Keys.Order());
        var api = await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, "10.96.0.11", 80, count: 5);
        Assert.Equal(["pod-2"], api.Keys);
        // The change was a partial sync: the proxy says so.
        var scrape = await scenario.Proxy!.ScrapeAsync();
        Assert.True(Sandboxed.ProxyProcess.Metric(scrape, "kubeproxy_sync_partial_proxy_rules_duration_seconds_count", "ip_family=\"IPv4\"") >= 1, scrape);
    }
}

[CollectionDefinition(Name)]
public sealed class KernelCollection
{
    // Kernel tests run one at a time: each builds namespaces and runs a proxy, and on 2 cores
    // running them in parallel only adds timing noise.
    public const string Name = "kernel";
}
