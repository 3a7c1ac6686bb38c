using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using ProxyPlanes.Model;
using ProxyPlanes.Sandbox;
using ProxyPlanes.Sandboxed;
using ProxyPlanes.Sources.Manifests;

namespace ProxyPlanes.Demo;

/// <summary>
/// `proxyplanes-lab demo`: the main job on an embedded default. Builds a sandbox of network
/// namespaces, serves the shipped example manifests with the real proxy in the node namespace,
/// sends real requests, scales an EndpointSlice, and removes everything it made.
/// </summary>
public static class DemoCommand
{
    private const string NodeName = "demo-node";
    private const string WebClusterIP = "10.96.0.10";
    private const int NodePort = 30080;
    private const string EmptyClusterIP = "10.96.0.20";
    private static readonly string[] WebPods = ["web-0", "web-1", "web-2"];

    public static Command Create()
    {
        var command = new Command("demo", "Run the proxy in a sandbox of network namespaces and show what it does (root)");
        var mode = new Option<string>("--mode") { Description = "Data plane to demonstrate", DefaultValueFactory = _ => "iptables" };
        var requests = new Option<int>("--requests") { Description = "Requests per probe", DefaultValueFactory = _ => 30 };
        command.Options.Add(mode);
        command.Options.Add(requests);
        command.SetAction(async (result, token) =>
        {
            try
            {
                return await RunAsync(result.GetValue(mode)!, Math.Clamp(result.GetValue(requests), 1, 1000), token);
            }
            catch (UsageException e)
            {
                Console.Error.WriteLine($"{ProxyProcess.Lab}: {e.Message}");
                return 2;
            }
        });
        return command;
    }

    // 5 s: busybox's CGI answer took over 2 s on a loaded 2-core CI machine (the VM lane running beside);
    // an answer that is merely slow is still an answer, and a real failure shows as its outcome.
    private static readonly TimeSpan AnswerTimeout = TimeSpan.FromSeconds(5);

    public static async Task<int> RunAsync(string mode, int requests, CancellationToken cancellationToken)
    {
        if (await Modes.Require(mode).KernelProblemAsync(cancellationToken) is { } missing) throw new UsageException(missing);
        if (Environment.UserName != "root") throw new UsageException("demo needs root: it builds network namespaces and programs their kernel rules");
        var examples = Path.Combine(AppContext.BaseDirectory, "examples", "demo");
        if (!Directory.Exists(examples)) throw new UsageException($"the example manifests are missing from {examples}");

        var manifests = Directory.CreateTempSubdirectory("proxyplanes-demo-");
        ClusterSandbox? sandbox = null;
        ProxyProcess? proxy = null;
        EbpfPlace? ebpf = null;
        try
        {
            Step("Building the sandbox: a client, a node with three web pods, a second node with one pod");
            // The demo owns Ctrl+C: the signal cancels its token and the finally below removes the sandbox
            // once the current step has stopped. The sandbox's own teardown on signals would pull the
            // namespaces from under that step first (a "disposed object" error instead of "Interrupted").
            sandbox = await ClusterSandbox.CreateAsync(new ClusterSandboxOptions { NodeName = NodeName, CleanupOnExitSignals = false }, cancellationToken);
            foreach (var pod in WebPods) await sandbox.AddPodAsync(pod, [8080], cancellationToken);
            var nodeB = await sandbox.AddRemoteNodeAsync("demo-node-b", cancellationToken);
            await sandbox.AddPodAsync("far-0", [8080], nodeB, cancellationToken);
            Console.WriteLine($"  namespaces {sandbox.Prefix}-*: client {sandbox.ClientIp}, node {sandbox.NodeIp}, pods " +
                              string.Join(", ", sandbox.Pods.Values.OrderBy(p => p.Name).Select(p => $"{p.Name}={p.IP}")));

            // --mode=ebpf: a cgroup of the demo's own for the socket hooks (the node's and pods' clients below join it)
            // and a private bpffs; never the host's cgroup root or /sys/fs/bpf.
            if (mode == "ebpf")
            {
                ebpf = new EbpfPlace(sandbox.Prefix);
                Console.WriteLine($"  eBPF: socket hooks on the cgroup {ebpf.Cgroup.Path}, pins in the bpffs {ebpf.BpfFs}");
            }
            var cgroup = ebpf?.Cgroup;

            foreach (var file in Directory.GetFiles(examples)) File.Copy(file, Path.Combine(manifests.FullName, Path.GetFileName(file)));
            Step($"Starting `proxyplanes run --mode={mode}` in the node namespace, serving {Directory.GetFiles(examples).Length} example manifests");
            proxy = ProxyProcess.Start(sandbox.Node,
            [
                "run", $"--mode={mode}", $"--manifests={manifests.FullName}", $"--hostname-override={NodeName}",
                $"--cluster-cidr={sandbox.ClusterCidr}", "--min-sync-period=100ms", "--v=0", .. ebpf?.Flags ?? [],
            ]);
            await proxy.WaitHealthyAsync(TimeSpan.FromSeconds(30));
            Console.WriteLine("  healthy: the first sync has programmed the kernel");

            Step($"Spreading {requests} requests over the endpoints");
            var table = new List<string[]> { new[] { "from", "to", "answered by (count)", "source the pod saw" } };
            table.Add(await ProbeAsync(sandbox.Client, "client", WebClusterIP, 80, "cluster IP", requests, cancellationToken));
            table.Add(await ProbeAsync(sandbox.Client, "client", sandbox.NodeIp, NodePort, "node port", requests, cancellationToken));
            table.Add(await ProbeAsync(sandbox.Node, "node itself", WebClusterIP, 80, "cluster IP", requests, cancellationToken, cgroup: cgroup));
            table.Add(await ProbeAsync(sandbox.Pods["web-1"].Namespace, "pod web-1", WebClusterIP, 80, "cluster IP", requests, cancellationToken, cgroup: cgroup));
            var refused = await sandbox.Client.HttpGetAsync(EmptyClusterIP, 80, "/", TimeSpan.FromSeconds(2), cancellationToken);
            table.Add(["client", $"{EmptyClusterIP}:80 (no endpoints)", $"{refused.Outcome} after {refused.Elapsed.TotalMilliseconds:0} ms", "-"]);
            table.Add(await ProbeAsync(sandbox.Client, "client", "10.96.0.30", 80, "ClientIP affinity", requests, cancellationToken));
            table.Add(await ProbeAsync(sandbox.Client, "client", sandbox.NodeIp, 30081, "node port, Local policy", requests, cancellationToken));
            table.Add(await ProbeAsync(sandbox.Client, "client", "10.96.0.53", 53, "UDP", requests, cancellationToken, udp: true));
            PrintTable(table);
            Console.WriteLine("  Off-cluster clients are masqueraded (the pod sees the node's address); pod-to-pod traffic keeps its");
            Console.WriteLine("  source, except a pod reaching itself through its service (hairpin), which must be masqueraded.");
            Console.WriteLine("  Affinity keeps the client on one pod. With externalTrafficPolicy: Local the node port skips far-0");
            Console.WriteLine("  (on demo-node-b) and the pod sees the client's own address.");
            if (ebpf is not null)
            {
                Console.WriteLine("  eBPF: the client's packets meet the tc programs on the node's interfaces; the node's and pod web-1's");
                Console.WriteLine("  requests come from processes in the demo's cgroup, whose sockets the socket hooks connect straight to a");
                Console.WriteLine("  pod, so nothing is masqueraded there, not even the hairpin (the README's per-mode table says so).");
            }

            Step("Scaling the web EndpointSlice and timing each change from file save to kernel");
            var latencies = new List<string[]> { new[] { "change", "endpoints", "save → kernel", "then answered by" } };
            foreach (var (label, keep) in new[] { ("scale down", 1), ("scale up", 3) })
            {
                var before = await proxy.ChangesSeenAsync();
                var saved = Stopwatch.GetTimestamp();
                WriteWebEndpoints(manifests.FullName, keep);
                await proxy.WaitForChangesSyncedAsync(before, TimeSpan.FromSeconds(10));
                var latency = Stopwatch.GetElapsedTime(saved);
                var answered = await ProbeAsync(sandbox.Client, "client", WebClusterIP, 80, "cluster IP", requests, cancellationToken);
                latencies.Add([label, keep.ToString(CultureInfo.InvariantCulture), $"{latency.TotalMilliseconds:0} ms", answered[2]]);
            }
            PrintTable(latencies);

            var scrape = await proxy.ScrapeAsync(cancellationToken);
            Step("What the proxy reports on /metrics");
            foreach (var name in new[] { "kubeproxy_sync_proxy_rules_duration_seconds_count", "kubeproxy_sync_proxy_rules_duration_seconds_sum", "kubeproxy_network_programming_duration_seconds_count" })
                Console.WriteLine($"  {name}{{ip_family=\"IPv4\"}} {ProxyProcess.Metric(scrape, name, "ip_family=\"IPv4\"")}");
            Console.WriteLine($"  kubeproxy_sync_proxy_rules_iptables_total{{ip_family=\"IPv4\"}} nat={ProxyProcess.Metric(scrape, "kubeproxy_sync_proxy_rules_iptables_total", "ip_family=\"IPv4\",table=\"nat\"")} filter={ProxyProcess.Metric(scrape, "kubeproxy_sync_proxy_rules_iptables_total", "ip_family=\"IPv4\",table=\"filter\"")}");
            Console.WriteLine(ebpf is null
                ? $"  To see the rules of a real node: iptables-save -t nat | grep KUBE-   (here: ip netns exec {sandbox.Node.Name} iptables-save)"
                : $"  To see the maps: bpftool map dump pinned {Path.Combine(ebpf.BpfFs, Backends.Ebpf.EbpfLocation.PinFolder, Backends.Ebpf.MapLayout.ServicesMap)}   (on a real node: /sys/fs/bpf/proxyplanes)");

            var terminated = await proxy.TerminateAsync(TimeSpan.FromSeconds(10));
            Step($"Stopped the proxy with SIGTERM (exit {terminated}); removing the sandbox");
            return 0;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            Console.Error.WriteLine("Interrupted: removing the sandbox");
            return 130;
        }
        catch (Exception e) when (e is TimeoutException or InvalidOperationException or SandboxException)
        {
            Console.Error.WriteLine($"{ProxyProcess.Lab} demo: {e.Message}");
            return 1;
        }
        finally
        {
            if (proxy is not null) await proxy.DisposeAsync();
            if (sandbox is not null) await sandbox.DisposeAsync();
            ebpf?.Dispose();
            manifests.Delete(recursive: true);
        }
    }

    /// <summary>
    /// Sends requests and summarises who answered and which source address they saw. With <paramref name="cgroup"/>,
    /// from a child process in that cgroup (see <see cref="LocalProbeCommand"/>), as the node's and pods' own processes.
    /// </summary>
    private static async Task<string[]> ProbeAsync(NetworkNamespace source, string fromLabel, string ip, int port, string what, int count, CancellationToken cancellationToken, bool udp = false, SandboxCgroup? cgroup = null)
    {
        var byPod = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var sources = new SortedSet<string>(StringComparer.Ordinal);
        var replies = cgroup is null
            ? await LocalProbeCommand.RequestsAsync(source, ip, port, udp, count, AnswerTimeout, cancellationToken)
            : await LocalProbeCommand.RequestsInCgroupAsync(source, cgroup, ip, port, udp, count, AnswerTimeout, cancellationToken);
        foreach (var (outcome, body) in replies)
        {
            var answered = outcome == ProbeOutcome.Answered;
            var key = answered ? Field(body, "pod") : outcome.ToString();
            byPod[key] = byPod.GetValueOrDefault(key) + 1;
            if (answered) sources.Add(Field(body, "src"));
        }
        return [fromLabel, $"{ip}:{port}{(udp ? "/udp" : "")} ({what})", string.Join(" ", byPod.Select(kv => $"{kv.Key}({kv.Value})")), string.Join(" ", sources)];
    }

    private static string Field(string body, string name) =>
        body.Split(' ', '\n').FirstOrDefault(w => w.StartsWith(name + "=", StringComparison.Ordinal))?[(name.Length + 1)..].Trim() ?? "?";

    /// <summary>Rewrites the web EndpointSlice with its first <paramref name="keep"/> endpoints, stamped with a trigger time.</summary>
    private static void WriteWebEndpoints(string directory, int keep)
    {
        var path = Path.Combine(directory, "web-endpoints.yaml");
        var original = ManifestParser.ParseFile(Path.Combine(AppContext.BaseDirectory, "examples", "demo", "web-endpoints.yaml")).EndpointSlices.Single();
        original.Endpoints = original.Endpoints!.Take(keep).ToList();
        original.Metadata!.Annotations = new() { ["endpoints.kubernetes.io/last-change-trigger-time"] = DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.fffffffZ", CultureInfo.InvariantCulture) };
        // JSON is YAML: the file keeps its name, so the watcher sees one edited object.
        var temp = path + ".tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(original, KubernetesJsonContext.Default.EndpointSlice));
        File.Move(temp, path, overwrite: true);
    }

    private static void Step(string text) => Console.WriteLine($"\n== {text}");

    private static void PrintTable(List<string[]> rows)
    {
        var widths = Enumerable.Range(0, rows[0].Length).Select(c => rows.Max(r => r[c].Length)).ToArray();
        for (var i = 0; i < rows.Count; i++)
        {
            Console.WriteLine("  " + string.Join("  ", rows[i].Select((cell, c) => cell.PadRight(widths[c]))).TrimEnd());
            if (i == 0) Console.WriteLine("  " + string.Join("  ", widths.Select(w => new string('-', w))));
        }
    }
}
