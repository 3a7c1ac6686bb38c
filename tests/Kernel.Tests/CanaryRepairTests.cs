using System.Diagnostics;
using System.Text;
using ProxyPlanes.Kernel.Tests.Conformance;
using ProxyPlanes.Sandbox;
using ProxyPlanes.Sandboxed;
using Xunit.Abstractions;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// kube-proxy's sync semantics with real rules: on a cluster with more than 1,000 endpoints,
/// quiet running brings periodic partial syncs that only check the canary (one full sync, the
/// first); rules flushed from outside the proxy are noticed by that check and repaired by a full
/// sync within the sync period, and real traffic flows again. Every mode this kernel runs (IPVS in
/// the VM lane, through <see cref="IpvsInVmTests"/>).
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class CanaryRepairTests(ITestOutputHelper output)
{
    private const string WebIP = "10.96.0.10";
    private static readonly TimeSpan SyncPeriod = TimeSpan.FromSeconds(1);

    /// <summary>
    /// ebpf is not here yet: its canary is its pins, and a full sync does not pin again what was unpinned
    /// behind its back (issue 12); its daemon also needs a test cgroup and bpffs (see ConformanceTests).
    /// </summary>
    public static IEnumerable<object[]> Modes() => ConformanceTests.Modes.Where(m => m != "ebpf").Select(m => new object[] { m });

    /// <summary>
    /// A flush from outside, per mode (what an operator's script or a firewall reload does), and in
    /// the same shell the listing that proves it: the next periodic check may repair it at once.
    /// </summary>
    private static (string Script, string Gone) Flush(string mode) => mode switch
    {
        // Rules and chains of both tables, built-in jumps included (iptables-nft: what the proxy picks on a fresh node).
        "iptables" => ("iptables-nft -t nat -F && iptables-nft -t nat -X && iptables-nft -t filter -F && iptables-nft -t filter -X && iptables-nft-save -t nat", "KUBE-SVC-"),
        // Every rule of our table; its chains, sets and maps stay.
        "nftables" => ("nft flush table ip proxyplanes && nft list table ip proxyplanes", "masquerade fully-random"),
        // Every virtual server.
        "ipvs" => ("ipvsadm -C && ipvsadm -Ln", WebIP),
        _ => throw new ArgumentException($"no flush command for {mode}"),
    };

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task QuietLargeCluster_OneFullSync_FlushFromOutside_RepairedWithinSyncPeriod(string mode)
    {
        // More than 1,000 endpoints: no periodic full resync at all. IPVS runs under emulation in the
        // VM lane, where one full sync of a single service takes about 15 s: just the web service
        // there (the large-cluster rule is the runner's, the same in every mode; the flush repair
        // through the IPVS canary is what this case adds).
        var fillers = mode == "ipvs" ? 0 : 1500;
        await using var scenario = await ProxyScenario.CreateAsync(pods: 2);
        scenario.WriteManifest("web.yaml", ProxyScenario.Service("web", WebIP) + "\n---\n" + ProxyScenario.Slice("web", scenario.PodIp(0), scenario.PodIp(1)));
        scenario.WriteManifest("fillers.yaml", Fillers(fillers));
        var proxy = await scenario.StartProxyAsync([$"--sync-period={SyncPeriod.TotalSeconds}s"], mode: mode);

        // Quiet running: several periodic checks, all finding the canary; no full sync but the first.
        var scrape = await WaitForAsync(proxy, s => ProxyProcess.Metric(s, "proxyplanes_sync_canary_checks_total", "result=\"intact\"") >= 4, TimeBudget.For(TimeSpan.FromSeconds(60)));
        Assert.Equal(1, ProxyProcess.Metric(scrape, "proxyplanes_sync_full_reason_total", "reason=\"start\""));
        Assert.Null(ProxyProcess.Metric(scrape, "proxyplanes_sync_full_reason_total", "reason=\"hourly\""));
        Assert.Null(ProxyProcess.Metric(scrape, "proxyplanes_sync_full_reason_total", "reason=\"flush\""));
        var answers = await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80, count: 20);
        Assert.Equal(["pod-0", "pod-1"], answers.Keys.Order());

        var (script, gone) = Flush(mode);
        var listing = await scenario.Sandbox.Node.CheckedExecAsync(["sh", "-c", script], TimeSpan.FromSeconds(30));
        var flushed = Stopwatch.StartNew();
        Assert.DoesNotContain(gone, listing.StandardOutput);

        // Repaired by the next periodic check's full sync: traffic reaches the pods again.
        var deadline = TimeBudget.For(TimeSpan.FromSeconds(30));
        HttpProbeResult probe;
        do
        {
            probe = await scenario.Sandbox.Client.HttpGetAsync(WebIP, 80, "/cgi-bin/who", TimeSpan.FromMilliseconds(300));
            if (!probe.IsAnswered) await Task.Delay(100);
        }
        while (!probe.IsAnswered && flushed.Elapsed < deadline);
        var repairedAfter = flushed.Elapsed;
        output.WriteLine($"{mode}: {fillers + 1} services, repaired {repairedAfter.TotalMilliseconds:F0} ms after the flush (sync period {SyncPeriod.TotalMilliseconds} ms)");
        Assert.True(probe.IsAnswered, $"not repaired within {deadline}: {probe.Outcome}\n--- proxy output ---\n{proxy.Output}");
        scrape = await proxy.ScrapeAsync();
        var syncLines = string.Join('\n', scrape.Split('\n').Where(l => l.StartsWith("proxyplanes_sync_", StringComparison.Ordinal)));
        Assert.True(ProxyProcess.Metric(scrape, "proxyplanes_sync_full_reason_total", "reason=\"flush\"") == 1, syncLines + "\n--- proxy output ---\n" + proxy.Output[^Math.Min(proxy.Output.Length, 3000)..]);
        Assert.Equal(1, ProxyProcess.Metric(scrape, "proxyplanes_sync_canary_checks_total", "result=\"gone\""));
        Assert.Contains("canary is gone", proxy.Output);
        // The check runs at most one period after the last sync; the full sync itself takes a little more.
        // IPVS only runs in the VM lane, where a full sync alone took 10-45 s (TimeBudget stretches by 4 there).
        Assert.True(repairedAfter < SyncPeriod + TimeBudget.For(TimeSpan.FromSeconds(mode == "ipvs" ? 20 : 8)), $"repaired only after {repairedAfter}");
        answers = await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80, count: 20);
        Assert.Equal(["pod-0", "pod-1"], answers.Keys.Order());
    }

    private static async Task<string> WaitForAsync(ProxyProcess proxy, Func<string, bool> condition, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var scrape = await proxy.ScrapeAsync();
            if (condition(scrape)) return scrape;
            if (clock.Elapsed > timeout) throw new TimeoutException($"metrics condition not met within {timeout}:\n{scrape}\n--- proxy output ---\n{proxy.Output}");
            await Task.Delay(200);
        }
    }

    /// <summary>Services with two endpoints each on another node (addresses nothing answers on): they only make the cluster large.</summary>
    private static string Fillers(int count)
    {
        var yaml = new StringBuilder();
        for (var i = 0; i < count; i++)
        {
            var name = $"filler-{i}";
            yaml.Append($"""
                apiVersion: v1
                kind: Service
                metadata: {"{"} name: {name}, namespace: test {"}"}
                spec:
                  clusterIP: 10.97.{i / 250}.{i % 250 + 1}
                  ports: [ {"{"} name: http, port: 80, targetPort: 8080 {"}"} ]
                ---
                apiVersion: discovery.k8s.io/v1
                kind: EndpointSlice
                metadata: {"{"} name: {name}-1, namespace: test, labels: {"{"} kubernetes.io/service-name: {name} {"}"} {"}"}
                addressType: IPv4
                ports: [ {"{"} name: http, protocol: TCP, port: 8080 {"}"} ]
                endpoints:
                  - {"{"} addresses: ["10.245.{i / 125}.{i % 125 * 2 + 1}"], conditions: {"{"} ready: true {"}"}, nodeName: node-b {"}"}
                  - {"{"} addresses: ["10.245.{i / 125}.{i % 125 * 2 + 2}"], conditions: {"{"} ready: true {"}"}, nodeName: node-b {"}"}
                ---

                """);
        }
        return yaml.ToString();
    }
}
