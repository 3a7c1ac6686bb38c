using System.Diagnostics;
using System.Text.RegularExpressions;
using ProxyPlanes.Sandbox;
using ProxyPlanes.Sandboxed;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>How the daemon behaves around the kernel: failures, cleanup, variants, signals, metrics, health.</summary>
[Collection(KernelCollection.Name)]
public sealed partial class DaemonTests
{
    private const string WebIP = "10.96.0.10";

    private static async Task<ProxyScenario> CreateWebAsync(int pods = 3)
    {
        var scenario = await ProxyScenario.CreateAsync(pods);
        scenario.WriteManifest("web.yaml", ProxyScenario.Service("web", WebIP, type: "NodePort", nodePort: 30080));
        scenario.WriteManifest("web-endpoints.yaml", ProxyScenario.Slice("web", Enumerable.Range(0, pods).Select(scenario.PodIp).ToArray()));
        return scenario;
    }

    [Fact]
    public async Task RestoreFailure_IsRetried_AndOldRulesStayInForce()
    {
        await using var scenario = await CreateWebAsync();
        // A real iptables-restore failure: a wrapper first on the proxy's PATH refuses while armed,
        // as a broken or locked iptables would.
        using var restore = RefusingTool.Create("iptables-nft-restore", "iptables-restore: line 42 failed (injected)");
        var proxy = await scenario.StartProxyAsync(["--iptables-variant=nft"], restore.Environment);
        Assert.Equal(3, (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80)).Count);

        restore.Arm();
        scenario.WriteManifest("web-endpoints.yaml", ProxyScenario.Slice("web", scenario.PodIp(0), scenario.PodIp(2)));
        await WaitForAsync(async () => ProxyProcess.Metric(await proxy.ScrapeAsync(), "kubeproxy_sync_proxy_rules_iptables_restore_failures_total", "ip_family=\"IPv4\"") >= 1, "a restore failure");

        // The kernel still has the previous rules: the removed endpoint still answers.
        var during = await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80);
        Assert.Equal(["pod-0", "pod-1", "pod-2"], during.Keys.Order());
        Assert.Contains("line 42 failed (injected)", proxy.Output);
        Assert.True(ProxyProcess.Metric(await proxy.ScrapeAsync(), "proxyplanes_sync_failures_total", "mode=\"iptables\"") >= 1, proxy.Output);

        var beforeRecovery = await proxy.LastSyncTimestampAsync();
        restore.Disarm();
        await proxy.WaitForSyncAfterAsync(beforeRecovery, TimeSpan.FromSeconds(40));
        var after = await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80);
        Assert.Equal(["pod-0", "pod-2"], after.Keys.Order());
        // The retry after a failure is a full sync.
        Assert.True(ProxyProcess.Metric(await proxy.ScrapeAsync(), "proxyplanes_sync_total", "kind=\"full\",mode=\"iptables\"") >= 2);
    }

    [Fact]
    public async Task Ip6tablesRestoreRefused_HealthzAndLivez503ForIPv6_WhileIPv4TakesTheChange()
    {
        await using var scenario = await ProxyScenario.CreateAsync(pods: 3);
        // A dual-stack service (its IPv6 half has no endpoints: REJECT), so an endpoint change writes both families.
        scenario.WriteManifest("web.yaml", ProxyScenario.Service("web", WebIP, extraSpec: "  clusterIPs: [\"10.96.0.10\", \"fd00:10:96::10\"]\n  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: RequireDualStack"));
        scenario.WriteManifest("web-endpoints.yaml", ProxyScenario.Slice("web", scenario.PodIp(0), scenario.PodIp(1), scenario.PodIp(2)));
        using var ip6tables = RefusingTool.Create("ip6tables-nft-restore", "ip6tables-restore: line 7 failed (injected)");
        // --sync-period 1 s: a change may wait 2 s before the proxy is unhealthy.
        var proxy = await scenario.StartProxyAsync(["--iptables-variant=nft", "--sync-period=1s"], ip6tables.Environment);
        async Task<(int? Healthz, string HealthzBody, int? Livez, string LivezBody)> ProbeAsync()
        {
            var healthz = await proxy.GetAsync(10256, "/healthz");
            var livez = await proxy.GetAsync(10256, "/livez");
            return (healthz.StatusCode, healthz.Body, livez.StatusCode, livez.Body);
        }

        // Positive control: both families programmed, IPv6's REJECT for the service included.
        var healthy = await ProbeAsync();
        Assert.Equal((200, 200), (healthy.Healthz, healthy.Livez));
        Assert.Matches(FamilyStatus("IPv4", true), healthy.HealthzBody);
        Assert.Matches(FamilyStatus("IPv6", true), healthy.HealthzBody);
        var ip6Before = await SaveAsync(scenario.Sandbox.Node, "nft", "ip6tables");
        Assert.Contains("fd00:10:96::10", ip6Before);

        ip6tables.Arm();
        // A partial sync sends only what changed, per family: the endpoint change alone is IPv4's, so the
        // service's IPv6 cluster IP moves too (IPv6 has a change to send, and ip6tables-restore refuses it).
        scenario.WriteManifest("web.yaml", ProxyScenario.Service("web", WebIP, extraSpec: "  clusterIPs: [\"10.96.0.10\", \"fd00:10:96::11\"]\n  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: RequireDualStack"));
        scenario.WriteManifest("web-endpoints.yaml", ProxyScenario.Slice("web", scenario.PodIp(0), scenario.PodIp(2)));

        // IPv4 takes the change though ip6tables-restore refuses it.
        await WaitForAsync(async () => (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80)).Keys.Order().SequenceEqual(["pod-0", "pod-2"]), "IPv4 to drop pod-1");
        Assert.Contains("line 7 failed (injected)", proxy.Output);
        // After 2 × --sync-period with the IPv6 change still waiting: 503 on both paths, IPv6 named.
        await WaitForAsync(async () => (await ProbeAsync()).Healthz == 503, "/healthz 503");
        var stale = await ProbeAsync();
        Assert.Equal((503, 503), (stale.Healthz, stale.Livez));
        Assert.Contains("\"nodeEligible\":true,\"healthy\":false,", stale.HealthzBody);
        Assert.Matches(FamilyStatus("IPv4", true), stale.HealthzBody);
        Assert.Matches(FamilyStatus("IPv6", false), stale.HealthzBody);
        Assert.Matches(FamilyStatus("IPv6", false), stale.LivezBody);
        Assert.DoesNotContain("nodeEligible", stale.LivezBody);
        Assert.Equal(ip6Before, await SaveAsync(scenario.Sandbox.Node, "nft", "ip6tables")); // IPv6's rules stay as they were
        Assert.Equal(["pod-0", "pod-2"], (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80)).Keys.Order());
        var scrape = await proxy.ScrapeAsync();
        Assert.True(ProxyProcess.Metric(scrape, "kubeproxy_proxy_healthz_total", "code=\"503\"") >= 1, scrape);
        Assert.True(ProxyProcess.Metric(scrape, "kubeproxy_proxy_livez_total", "code=\"503\"") >= 1, scrape);
        Assert.True(ProxyProcess.Metric(scrape, "kubeproxy_sync_proxy_rules_iptables_restore_failures_total", "ip_family=\"IPv6\"") >= 1, scrape);
        Assert.Null(ProxyProcess.Metric(scrape, "kubeproxy_sync_proxy_rules_iptables_restore_failures_total", "ip_family=\"IPv4\""));

        // ip6tables-restore works again: the retry programs IPv6 and both paths answer 200.
        ip6tables.Disarm();
        await WaitForAsync(async () => (await ProbeAsync()) is { Healthz: 200, Livez: 200 }, "/healthz and /livez 200 again");
        Assert.Matches(FamilyStatus("IPv6", true), (await ProbeAsync()).HealthzBody);
        Assert.Contains("fd00:10:96::11", await SaveAsync(scenario.Sandbox.Node, "nft", "ip6tables"));
    }

    /// <summary>One family's entry in kube-proxy's health JSON (<c>"status":{"IPv4":{"lastUpdated":…,"healthy":…}}</c>).</summary>
    private static Regex FamilyStatus(string family, bool healthy) =>
        new($"\"{family}\":\\{{\"lastUpdated\":\"\\d{{4}}-[^\"]+Z\",\"healthy\":{(healthy ? "true" : "false")}\\}}");

    /// <summary>
    /// A wrapper of a kernel tool, first on the daemon's PATH, that refuses (exit 1, a message on
    /// stderr, its input read) while armed and runs the real tool otherwise. Deleted when disposed.
    /// </summary>
    private sealed class RefusingTool : IDisposable
    {
        private readonly DirectoryInfo _directory;
        private readonly string _flag;

        private RefusingTool(DirectoryInfo directory, string flag)
        {
            _directory = directory;
            _flag = flag;
        }

        public static RefusingTool Create(string tool, string message)
        {
            var directory = Directory.CreateTempSubdirectory("proxyplanes-tools-");
            var flag = Path.Combine(directory.FullName, "fail");
            var wrapper = Path.Combine(directory.FullName, tool);
            File.WriteAllText(wrapper, $"#!/bin/sh\nif [ -e '{flag}' ]; then echo '{message}' >&2; cat >/dev/null; exit 1; fi\nexec {InstalledTool.PathOf(tool)} \"$@\"\n");
            File.SetUnixFileMode(wrapper, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            return new RefusingTool(directory, flag);
        }

        /// <summary>The daemon's environment: this wrapper first on PATH.</summary>
        public Dictionary<string, string> Environment => new() { ["PATH"] = $"{_directory.FullName}:{System.Environment.GetEnvironmentVariable("PATH")}" };

        public void Arm() => File.WriteAllText(_flag, "");

        public void Disarm() => File.Delete(_flag);

        public void Dispose() => _directory.Delete(recursive: true);
    }

    [Theory]
    [InlineData("nft")]
    [InlineData("legacy")]
    public async Task Cleanup_AfterSigterm_LeavesIptablesSaveAsBefore(string variant)
    {
        await using var scenario = await CreateWebAsync();
        var node = scenario.Sandbox.Node;
        // The node has rules of its own in both tables; they must survive untouched, and their
        // presence in the save marks the variant the node uses (detection must pick it).
        await node.CheckedExecAsync($"iptables-{variant}", "-t", "filter", "-A", "INPUT", "-s", "198.51.100.7/32", "-j", "DROP");
        await node.CheckedExecAsync($"iptables-{variant}", "-t", "nat", "-A", "POSTROUTING", "-s", "198.51.100.8/32", "-j", "RETURN");
        var before = await SaveAsync(node, variant);

        var proxy = await scenario.StartProxyAsync();
        Assert.Contains($"Using iptables-{variant} (detected)", proxy.Output);
        Assert.Contains("KUBE-SERVICES", await SaveAsync(node, variant));

        // SIGTERM: a clean exit that leaves the rules in place, so traffic keeps flowing.
        Assert.Equal(0, await proxy.TerminateAsync(TimeSpan.FromSeconds(15)));
        Assert.Equal(3, (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80)).Count);

        var (file, prefix) = ProxyProcess.Executable();
        var cleanup = await node.ExecAsync([file, .. prefix, "cleanup", "--mode=iptables"], TimeSpan.FromSeconds(60));
        Assert.True(cleanup.Succeeded, cleanup.StandardError + cleanup.StandardOutput);

        Assert.Equal(before, await SaveAsync(node, variant));
        var refused = await scenario.Sandbox.Client.HttpGetAsync(WebIP, 80, "/", TimeSpan.FromSeconds(2));
        Assert.False(refused.IsAnswered);
    }

    [Fact]
    public async Task Restart_SameMode_TheOtherModesCleanupsLeaveItsRulesAlone()
    {
        await using var scenario = await CreateWebAsync();
        var first = await scenario.StartProxyAsync(["--iptables-variant=nft"]);
        Assert.Equal(0, await first.TerminateAsync(TimeSpan.FromSeconds(15)));
        var left = await SaveAsync(scenario.Sandbox.Node, "nft");
        Assert.Contains(":KUBE-SVC-", left); // positive control: SIGTERM leaves the rules in place

        // On restart the IPVS cleanup runs beside the iptables mode: it used to try to delete
        // KUBE-SERVICES and the per-service chains, which the kernel refused (chain busy).
        var second = await scenario.StartProxyAsync(["--iptables-variant=nft"]);

        Assert.Contains("No IPVS mode state of ours found", second.Output);
        Assert.DoesNotContain("Could not remove what", second.Output);
        Assert.Equal(3, (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80)).Count);
    }

    [Fact]
    public async Task NodeTaintedForDeletion_HealthzAnswers503_LivezStays200_TrafficStillFlows()
    {
        await using var scenario = await CreateWebAsync();
        var proxy = await scenario.StartProxyAsync();
        string Node(string taints) => $"""
            apiVersion: v1
            kind: Node
            metadata: {"{"} name: {ProxyScenario.NodeName} {"}"}
            spec:
              taints: [{taints}]
            """;
        async Task<(int? Healthz, int? Livez, string Body)> ProbeAsync()
        {
            var healthz = await proxy.GetAsync(10256, "/healthz");
            return (healthz.StatusCode, (await proxy.GetAsync(10256, "/livez")).StatusCode, healthz.Body);
        }
        async Task<(int? Healthz, int? Livez, string Body)> WaitAsync(int healthz)
        {
            var clock = Stopwatch.StartNew();
            while (true)
            {
                var probe = await ProbeAsync();
                if (probe.Healthz == healthz || clock.Elapsed > TimeSpan.FromSeconds(20)) return probe;
                await Task.Delay(50);
            }
        }

        // Positive control: the node object with an unrelated taint leaves the node eligible.
        scenario.WriteManifest("node.yaml", Node("{ key: node.kubernetes.io/unschedulable, effect: NoSchedule }"));
        await Task.Delay(500);
        Assert.Equal((200, 200), ((await ProbeAsync()).Healthz, (await ProbeAsync()).Livez));

        scenario.WriteManifest("node.yaml", Node("{ key: ToBeDeletedByClusterAutoscaler, value: \"1733400000\", effect: NoSchedule }"));
        var draining = await WaitAsync(503);
        Assert.Equal(503, draining.Healthz);
        Assert.Equal(200, draining.Livez); // alive: only load balancers should stop sending traffic here
        Assert.Contains("\"nodeEligible\":false", draining.Body);
        Assert.Equal(3, (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80)).Count); // rules stay
        Assert.True(ProxyProcess.Metric(await proxy.ScrapeAsync(), "kubeproxy_proxy_healthz_total", "code=\"503\"") >= 1);

        scenario.WriteManifest("node.yaml", Node(""));
        Assert.Equal(200, (await WaitAsync(200)).Healthz);
    }

    [Fact]
    public async Task FullResync_DoesNotDuplicateJumpsFromBuiltInChains()
    {
        await using var scenario = await CreateWebAsync();
        var proxy = await scenario.StartProxyAsync(["--sync-period=300ms", "--iptables-variant=nft"]);
        // Periodic syncs are partial; a full sync over rules already in place comes from a
        // detected flush. Deleting only the canary chain leaves every jump where it was, so each
        // canary-triggered full sync meets its own jumps in the built-in chains, twice over.
        for (var round = 1; round <= 2; round++)
        {
            await scenario.Sandbox.Node.CheckedExecAsync("sh", "-c", "iptables-nft -t nat -F KUBE-PROXY-CANARY && iptables-nft -t nat -X KUBE-PROXY-CANARY");
            await WaitForAsync(async () => ProxyProcess.Metric(await proxy.ScrapeAsync(), "proxyplanes_sync_full_reason_total", "reason=\"flush\"") >= round, $"full sync number {round} after the canary was deleted");
            await WaitForAsync(async () => (await scenario.Sandbox.Node.ExecAsync(["iptables-nft", "-w", "5", "-t", "nat", "-S", "KUBE-PROXY-CANARY"], TimeSpan.FromSeconds(10))).Succeeded, "the canary written again");
        }
        await WaitForAsync(async () => ProxyProcess.Metric(await proxy.ScrapeAsync(), "proxyplanes_sync_total", "kind=\"full\",mode=\"iptables\"") >= 3, "the third full sync recorded");

        var save = await SaveAsync(scenario.Sandbox.Node, "nft");
        foreach (var jump in new[] { "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES", "-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES" })
            Assert.Equal(1, save.Split('\n').Count(l => l == jump));
        Assert.Equal(3, ProxyProcess.Metric(await proxy.ScrapeAsync(), "proxyplanes_sync_total", "kind=\"full\",mode=\"iptables\""));
        Assert.Equal(3, (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80)).Count);
    }

    [Fact]
    public async Task Metrics_RealScrapeAfterEdits_EventsMovedTheValues_PromtoolPasses()
    {
        await using var scenario = await CreateWebAsync();
        var started = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000d;
        var proxy = await scenario.StartProxyAsync();
        var atStart = await proxy.ScrapeAsync();
        double Value(string scrape, string name, string? labels = null) =>
            ProxyProcess.Metric(scrape, name, labels) ?? throw new Xunit.Sdk.XunitException($"{name}{{{labels}}} is missing:\n{scrape}");

        // The manifests hold one Service and one EndpointSlice: one change each, synced in full at start.
        Assert.Equal(1, Value(atStart, "kubeproxy_sync_proxy_rules_service_changes_total"));
        Assert.Equal(1, Value(atStart, "kubeproxy_sync_proxy_rules_endpoint_changes_total"));
        Assert.True(Value(atStart, "proxyplanes_sync_total", "kind=\"full\",mode=\"iptables\"") >= 1, atStart);
        Assert.True(Value(atStart, "kubeproxy_sync_full_proxy_rules_duration_seconds_count", "ip_family=\"IPv4\"") >= 1, atStart);
        Assert.Equal(1, Value(atStart, "proxyplanes_sync_full_reason_total", "reason=\"start\""));
        // Health probes are counted by the status they got (kube-proxy's healthz/livez counters):
        // three more of each, through a real HTTP client, move the 200 series by exactly three.
        var healthzBefore = Value(atStart, "kubeproxy_proxy_healthz_total", "code=\"200\""); // the start wait polled it
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(200, (await proxy.GetAsync(10256, "/healthz")).StatusCode);
            Assert.Equal(200, (await proxy.GetAsync(10256, "/livez")).StatusCode);
        }
        var probed = await proxy.ScrapeAsync();
        Assert.Equal(healthzBefore + 3, Value(probed, "kubeproxy_proxy_healthz_total", "code=\"200\""));
        Assert.Equal(3, Value(probed, "kubeproxy_proxy_livez_total", "code=\"200\""));
        // The start wait may have met 503s before the first sync; none came since.
        Assert.Equal(ProxyProcess.Metric(atStart, "kubeproxy_proxy_healthz_total", "code=\"503\""), ProxyProcess.Metric(probed, "kubeproxy_proxy_healthz_total", "code=\"503\""));

        // Three edits of the slice, each synced before the next: three endpoint changes, three more syncs.
        string[][] edits = [[scenario.PodIp(0)], [scenario.PodIp(0), scenario.PodIp(1)], [scenario.PodIp(1)]];
        foreach (var pods in edits)
            await scenario.WriteManifestAndSyncAsync("web-endpoints.yaml", ProxyScenario.Slice("web", pods));
        Assert.Equal(["pod-1"], (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80, count: 10)).Keys);

        var scrape = await proxy.ScrapeAsync();
        var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000d;
        Assert.Equal(1 + edits.Length, Value(scrape, "kubeproxy_sync_proxy_rules_endpoint_changes_total"));
        Assert.Equal(1, Value(scrape, "kubeproxy_sync_proxy_rules_service_changes_total"));
        Assert.Equal(2 + edits.Length, Value(scrape, "proxyplanes_sync_changes_applied")); // everything seen is programmed
        Assert.Equal(0, Value(scrape, "kubeproxy_sync_proxy_rules_endpoint_changes_pending"));
        Assert.Equal(0, Value(scrape, "kubeproxy_sync_proxy_rules_service_changes_pending"));
        var syncs = Value(scrape, "kubeproxy_sync_proxy_rules_duration_seconds_count", "ip_family=\"IPv4\"");
        Assert.True(syncs >= Value(atStart, "kubeproxy_sync_proxy_rules_duration_seconds_count", "ip_family=\"IPv4\"") + edits.Length, scrape);
        Assert.True(Value(scrape, "kubeproxy_sync_proxy_rules_duration_seconds_sum", "ip_family=\"IPv4\"") > 0, scrape);
        Assert.Equal(syncs, Value(scrape, "kubeproxy_sync_proxy_rules_duration_seconds_bucket", "ip_family=\"IPv4\",le=\"+Inf\""));
        // The node is dual-stack (ip6tables works in the sandbox): every sync programmed both families, as kube-proxy's
        // two proxiers would each report.
        Assert.Equal(syncs, Value(scrape, "kubeproxy_sync_proxy_rules_duration_seconds_count", "ip_family=\"IPv6\""));
        Assert.True(Value(scrape, "proxyplanes_sync_total", "kind=\"partial\",mode=\"iptables\"") >= 1, scrape);
        Assert.True(Value(scrape, "kubeproxy_sync_partial_proxy_rules_duration_seconds_count", "ip_family=\"IPv4\"") >= 1, scrape);
        Assert.True(Value(scrape, "proxyplanes_sync_phase_duration_seconds_count", "mode=\"iptables\",phase=\"apply\"") >= 1 + edits.Length, scrape);
        Assert.InRange(Value(scrape, "kubeproxy_sync_proxy_rules_last_timestamp_seconds", "ip_family=\"IPv4\""), started, now);
        Assert.InRange(Value(scrape, "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds", "ip_family=\"IPv4\""), started, now);
        Assert.Equal(0, Value(scrape, "kubeproxy_sync_proxy_rules_no_local_endpoints_total", "ip_family=\"IPv4\",traffic_policy=\"internal\""));
        Assert.Null(ProxyProcess.Metric(scrape, "proxyplanes_sync_failures_total", "mode=\"iptables\"")); // no failure, no series
        // Edits are partial syncs: the only full sync is the first.
        Assert.Equal(1, Value(scrape, "proxyplanes_sync_full_reason_total", "reason=\"start\""));
        Assert.Equal(1, Value(scrape, "proxyplanes_sync_total", "kind=\"full\",mode=\"iptables\""));
        Assert.Equal(0, Value(scrape, "proxyplanes_conntrack_cleanup_failures_total"));
        // The iptables data plane's own metrics; the nftables ones belong to --mode=nftables.
        Assert.True(Value(scrape, "kubeproxy_sync_proxy_rules_iptables_total", "ip_family=\"IPv4\",table=\"nat\"") > 10, scrape);
        Assert.True(Value(scrape, "kubeproxy_sync_proxy_rules_iptables_last", "ip_family=\"IPv4\",table=\"nat\"") > 0, scrape);
        Assert.DoesNotContain("kubeproxy_sync_proxy_rules_iptables_restore_failures_total{", scrape); // no failure, no series
        Assert.DoesNotContain("nftables", scrape);
        // Process metrics (client_golang's names, as kube-proxy has them).
        Assert.True(Value(scrape, "process_resident_memory_bytes") > 1_000_000, scrape);
        Assert.True(Value(scrape, "process_open_fds") > 0, scrape);
        Assert.InRange(Value(scrape, "process_start_time_seconds"), started - 5, now);

        var lint = await Promtool.CheckMetricsAsync(scrape);
        Assert.True(lint.AcceptedApartFromKnownLints, lint.ToString());
        Assert.Equal(Promtool.KnownLints.Order(StringComparer.Ordinal), lint.Complaints.Order(StringComparer.Ordinal));

        // A Prometheus server asks for OpenMetrics; the answer stays kube-proxy's text format 0.0.4.
        var negotiated = await scenario.Sandbox.Node.CheckedExecAsync(
            "busybox", "wget", "-S", "-O", "-", "--header", "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            "http://127.0.0.1:10249/metrics");
        Assert.Contains("Content-Type: text/plain; version=0.0.4", negotiated.StandardError, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("# TYPE kubeproxy_sync_proxy_rules_endpoint_changes_total counter", negotiated.StandardOutput);

        var mode = await proxy.GetAsync(10249, "/proxyMode");
        Assert.Equal("iptables", mode.Body.Trim());
        foreach (var path in new[] { "/healthz", "/livez" })
        {
            var health = await proxy.GetAsync(10256, path);
            Assert.Equal(200, health.StatusCode);
            Assert.Contains("\"lastUpdated\"", health.Body);
        }
    }

    [Fact]
    public async Task Nftables_MetricsCleanupAndModeSwitch_AreClean()
    {
        await using var scenario = await CreateWebAsync();
        var node = scenario.Sandbox.Node;

        // iptables first, then nftables on the same node: starting nftables removes iptables' state.
        var iptables = await scenario.StartProxyAsync(["--iptables-variant=nft"]);
        Assert.Contains("KUBE-SERVICES", await SaveAsync(node, "nft"));
        Assert.Equal(0, await iptables.TerminateAsync(TimeSpan.FromSeconds(15)));
        var (file, prefix) = ProxyProcess.Executable();
        var nftables = ProxyProcess.Start(node,
        [
            "run", "--mode=nftables", $"--manifests={scenario.Manifests.FullName}", $"--hostname-override={ProxyScenario.NodeName}",
            $"--cluster-cidr={scenario.Sandbox.ClusterCidr}", "--min-sync-period=50ms",
        ]);
        try
        {
            await nftables.WaitHealthyAsync(TimeSpan.FromSeconds(60));
            Assert.DoesNotContain("KUBE-SERVICES", await SaveAsync(node, "nft"));
            Assert.Equal(3, (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80)).Count);

            var scrape = await nftables.ScrapeAsync();
            Assert.Equal("nftables", (await nftables.GetAsync(10249, "/proxyMode")).Body.Trim());
            Assert.True(ProxyProcess.Metric(scrape, "proxyplanes_nftables_objects", "kind=\"elements\"") >= 1, scrape);
            Assert.True(ProxyProcess.Metric(scrape, "proxyplanes_nftables_objects", "kind=\"chains\"") >= 5, scrape);
            Assert.DoesNotContain("kubeproxy_sync_proxy_rules_nftables_sync_failures_total{", scrape); // no failure, no series
            Assert.True(ProxyProcess.Metric(scrape, "kubeproxy_sync_proxy_rules_duration_seconds_count", "ip_family=\"IPv4\"") >= 1, scrape);
            Assert.True(ProxyProcess.Metric(scrape, "proxyplanes_sync_total", "kind=\"full\",mode=\"nftables\"") >= 1, scrape);
            Assert.DoesNotContain("kubeproxy_sync_proxy_rules_iptables", scrape); // the iptables data plane's metrics
            var lint = await Promtool.CheckMetricsAsync(scrape);
            Assert.True(lint.AcceptedApartFromKnownLints, lint.ToString());

            Assert.Equal(0, await nftables.TerminateAsync(TimeSpan.FromSeconds(15)));
            var cleanup = await node.ExecAsync([file, .. prefix, "cleanup", "--mode=nftables"], TimeSpan.FromSeconds(60));
            Assert.True(cleanup.Succeeded, cleanup.StandardError + cleanup.StandardOutput);
            var tables = await node.CheckedExecAsync("nft", "list", "tables");
            Assert.DoesNotContain("proxyplanes", tables.StandardOutput);
        }
        finally
        {
            await nftables.DisposeAsync();
        }
    }

    [Fact]
    public async Task MalformedEdit_KeepsLastGoodRules_AndIsReportedWithFileAndLine()
    {
        await using var scenario = await CreateWebAsync();
        var proxy = await scenario.StartProxyAsync();

        scenario.WriteManifest("web-endpoints.yaml", ProxyScenario.Slice("web", scenario.PodIp(0)).Replace("port: 8080", "port: eighty"));
        await WaitForAsync(() => Task.FromResult(MalformedReport().IsMatch(proxy.Output)), "the malformed file to be reported");

        Assert.Equal(3, (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80)).Count);
        await scenario.WriteManifestAndSyncAsync("web-endpoints.yaml", ProxyScenario.Slice("web", scenario.PodIp(0)));
        Assert.Equal(["pod-0"], (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80, count: 10)).Keys);
    }

    [GeneratedRegex(@"web-endpoints\.yaml:\d+")]
    private static partial Regex MalformedReport();

    /// <summary>iptables-save of one variant without the header comments and packet counters (also used by CrashRecoveryTests).</summary>
    internal static async Task<string> SaveAsync(NetworkNamespace node, string variant, string tool = "iptables")
    {
        var save = (await node.CheckedExecAsync($"{tool}-{variant}-save")).StandardOutput;
        // Drop the header/footer comments and packet counters, which change by themselves.
        return string.Join('\n', save.Split('\n').Where(l => !l.StartsWith('#')).Select(l => CounterPattern().Replace(l, "")));
    }

    [GeneratedRegex(@" \[\d+:\d+\]$")]
    private static partial Regex CounterPattern();


    private static async Task WaitForAsync(Func<Task<bool>> condition, string what)
    {
        var stopwatch = Stopwatch.StartNew();
        while (stopwatch.Elapsed < TimeSpan.FromSeconds(30))
        {
            if (await condition()) return;
            await Task.Delay(50);
        }
        throw new TimeoutException($"timed out waiting for {what}");
    }
}
