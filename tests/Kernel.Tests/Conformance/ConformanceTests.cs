using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using ProxyPlanes.Sandbox;
using ProxyPlanes.Sandboxed;
using Xunit.Abstractions;

namespace ProxyPlanes.Kernel.Tests.Conformance;

/// <summary>
/// Every scenario against every data plane, through the same code: the real proxyplanes binary in
/// the node namespace of <see cref="ConformanceTopology"/>, real packets, real answers. A new data
/// plane joins by adding its --mode name to <see cref="Modes"/>. --mode=ebpf runs with its own cgroup and
/// bpffs, and its node and pod probes in that cgroup.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class ConformanceTests(ITestOutputHelper output)
{
    /// <summary>
    /// Every built mode this kernel can run: IPVS only where the ip_vs module loads (the VM lane,
    /// see IpvsConformanceInVmTests; the development kernel has none).
    /// </summary>
    public static readonly string[] Modes = Built().ToArray();

    private static IEnumerable<string> Built()
    {
        foreach (var mode in ProxyPlanes.Modes.Built)
            if (ProxyPlanes.Modes.KernelProblemAsync(mode, CancellationToken.None).GetAwaiter().GetResult() is null)
                yield return mode;
    }

    /// <summary>
    /// The one explain check --mode=ebpf cannot pass: explain tells a pod (a process in --bpf-cgroup, socket hooks) from an
    /// off-node client (tc) by pp_localsrc4_v1, which holds Core's detect-local prefixes; detect-local by interface
    /// (InterfaceNamePrefix, BridgeInterface) has none, so there a pod's address is taken for an off-node client.
    /// </summary>
    private static string? EbpfExplainSkip(Scenario scenario, Probe probe) =>
        probe.From is "node" || IsOffNode(probe) || !(scenario.ExtraArgs ?? []).Any(a => a is "--detect-local-mode=InterfaceNamePrefix" or "--detect-local-mode=BridgeInterface") ? null
        : "detect-local by interface: pp_localsrc4_v1 holds prefixes only, so explain takes a pod's address for an off-node client";

    /// <summary>A probe from an off-node client: its packets reach the node's interfaces, where the tc programs act.</summary>
    private static bool IsOffNode(Probe probe) => probe.From is "client" or "client2";

    /// <summary>Every scenario in every mode.</summary>
    public static IEnumerable<object[]> Cases() =>
        from mode in Modes
        from scenario in ConformanceScenarios.All
        select new object[] { mode, scenario.Name };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Scenario_Passes(string mode, string scenarioName)
    {
        var scenario = ConformanceScenarios.All.Single(s => s.Name == scenarioName);
        // --mode=ebpf: a cgroup, its path through a cgroup2 mount the daemon can see (ip netns exec hides
        // /sys), and a bpffs, all the test's own; never the node defaults (the host's cgroup root).
        using var ebpf = mode == "ebpf" ? new EbpfPlace("conformance-" + Guid.NewGuid().ToString("N")[..6]) : null;
        await using var sandbox = await ConformanceTopology.BuildAsync();
        var manifests = Directory.CreateTempSubdirectory("proxyplanes-conformance-");
        ProxyProcess? proxy = null;
        try
        {
            Write(manifests, scenario.Manifests);
            proxy = ProxyProcess.Start(sandbox.Node,
            [
                "run", $"--mode={mode}", $"--manifests={manifests.FullName}", $"--hostname-override={ConformanceTopology.NodeName}",
                "--cluster-cidr=10.244.0.0/16,fd00:10:244::/48", "--min-sync-period=50ms", "--v=4", .. scenario.ExtraArgs ?? [], .. ebpf?.Flags ?? [],
            ]);
            await proxy.WaitHealthyAsync(TimeSpan.FromSeconds(60));
            // What the eBPF mode chose on this kernel (tcx or clsact, socket destroy or not): EbpfInVmTests reads it.
            foreach (var line in ebpf is null ? [] : proxy.Output.Split('\n').Where(l => l.Contains("eBPF: ", StringComparison.Ordinal)))
                output.WriteLine($"daemon: {line.Trim()}");

            foreach (var step in scenario.Steps)
            {
                if (step.NewManifests is { } next)
                {
                    var before = await proxy.ChangesSeenAsync();
                    Write(manifests, next);
                    await proxy.WaitForChangesSyncedAsync(before, TimeSpan.FromSeconds(20));
                }
                foreach (var probe in step.Probes)
                {
                    // Off-node clients stay out of the cgroup: their packets, not their sockets, meet the data plane.
                    var problem = ebpf is null || IsOffNode(probe) ? await CheckAsync(sandbox, probe) : await CheckInCgroupAsync(sandbox, probe, ebpf.Cgroup.Path);
                    Assert.True(problem is null, $"{scenario.Name} [{mode}]: {probe}: {problem}\n--- proxy output ---\n{proxy.Output}");
                    output.WriteLine($"ok: {probe}");
                    if (ProxyPlanes.Modes.Require(mode).Explainer is null || probe.Expect.Kind == ExpectKind.Http) continue;
                    if (ebpf is not null && EbpfExplainSkip(scenario, probe) is { } unexplained)
                    {
                        output.WriteLine($"skip explain [ebpf]: {unexplained}");
                        continue;
                    }
                    var disagreement = await ExplainDisagreesAsync(sandbox, mode, probe);
                    Assert.True(disagreement is null, $"{scenario.Name} [{mode}]: {probe}: the packets did what the row expects, but explain says otherwise: {disagreement}");
                    output.WriteLine($"ok: explain agrees");
                }
                if (step.Metrics is { Count: > 0 } metrics)
                {
                    var scrape = await proxy.ScrapeAsync();
                    foreach (var metric in metrics.Where(m => m.Modes is null || m.Modes.Contains(mode)))
                    {
                        var value = ProxyProcess.Metric(scrape, metric.Name, metric.Labels);
                        Assert.True(value >= metric.Minimum, $"{scenario.Name} [{mode}]: {metric}, but it is {value?.ToString() ?? "absent"}\n--- scrape ---\n{scrape}");
                        output.WriteLine($"ok: {metric} ({value})");
                    }
                }
            }
        }
        finally
        {
            if (proxy is not null) await proxy.DisposeAsync();
            manifests.Delete(recursive: true);
        }
    }

    /// <summary>
    /// Null when <c>proxyplanes explain</c>, run in the node namespace, predicts what the row's real packets
    /// just did: the same endpoints (by address) for a spread, a subset with affinity for a sticky row,
    /// reject for a refused one, drop or pass for no answer, and masquerading as the source the pods saw.
    /// </summary>
    private static async Task<string?> ExplainDisagreesAsync(ClusterSandbox sandbox, string mode, Probe probe)
    {
        var ipv6 = probe.To.Contains(':');
        var source = probe.From switch
        {
            "client" => ipv6 ? sandbox.ClientIpv6 : sandbox.ClientIp,
            "client2" => ipv6 ? sandbox.ExternalClients[1].IPv6 : sandbox.ExternalClients[1].IP,
            "node" => ipv6 ? sandbox.NodeIpv6 : sandbox.NodeIp,
            _ => ipv6 ? ConformanceTopology.Pods[probe.From].IPv6 : ConformanceTopology.Pods[probe.From].IPv4,
        };
        var (file, prefix) = ProxyProcess.Executable(ProxyProcess.Daemon);
        string[] question = [probe.Transport == Transport.Tcp ? "tcp" : "udp", ipv6 ? $"[{probe.To}]:{probe.Port}" : $"{probe.To}:{probe.Port}", "--from", source!, "--mode", mode];
        var json = await sandbox.Node.ExecAsync([file, .. prefix, "explain", .. question, "-o", "json"], TimeBudget.For(TimeSpan.FromSeconds(30)));
        if (!json.Succeeded) return $"explain {string.Join(" ", question)} exited with {json.ExitCode}: {json.StandardError}";
        using var answer = System.Text.Json.JsonDocument.Parse(json.StandardOutput);
        var root = answer.RootElement;
        var verdict = root.GetProperty("verdict").GetString();
        var reached = root.GetProperty("endpoints").EnumerateArray().Select(e => Host(e.GetString()!)).ToHashSet();
        var expect = probe.Expect;
        var pods = expect.Pods.Select(p => ipv6 ? ConformanceTopology.Pods[p].IPv6 : ConformanceTopology.Pods[p].IPv4).ToHashSet();
        var problem = expect.Kind switch
        {
            // Refused by our REJECT, or (pass) by the node's own stack: nothing listens on a node address's port.
            ExpectKind.Refused when verdict != "reject" && !(verdict == "pass" && NodeAddresses.Contains(probe.To)) =>
                $"verdict {verdict}, expected reject{(NodeAddresses.Contains(probe.To) ? " or pass" : "")}",
            // No pod answers: dropped, refused, or not ours (a refusal also counts as no answer in CheckAsync).
            ExpectKind.NoAnswer when verdict == "forward" => $"verdict forward to {string.Join(",", reached)}, expected no endpoint to answer",
            ExpectKind.Spread when verdict != "forward" || !reached.SetEquals(pods) => $"verdict {verdict} to {string.Join(",", reached)}, expected forward to {string.Join(",", pods)}",
            ExpectKind.Sticky when verdict != "forward" || !reached.IsSubsetOf(pods) || !root.GetProperty("affinity").GetBoolean() =>
                $"verdict {verdict} to {string.Join(",", reached)} (affinity {root.GetProperty("affinity")}), expected sticky forward within {string.Join(",", pods)}",
            ExpectKind.Spread or ExpectKind.Sticky when expect.Source is { } seen && !pods.Contains(source!) && root.GetProperty("masquerade").GetBoolean() != (seen != source) =>
                $"masquerade {root.GetProperty("masquerade")}, but the pods saw {seen} from {source}",
            _ => null,
        };
        if (problem is null) return null;
        // The text form (with the rules that decided) only for the message: each run of the CLI is slow in the VM lane.
        var text = (await sandbox.Node.ExecAsync([file, .. prefix, "explain", .. question], TimeBudget.For(TimeSpan.FromSeconds(30)))).StandardOutput;
        return $"{problem}\n--- explain ---\n{text}";

        static string Host(string endpoint) => endpoint.StartsWith('[') ? endpoint[1..endpoint.IndexOf(']')] : endpoint[..endpoint.LastIndexOf(':')];
    }

    /// <summary>The node's own addresses in the topology.</summary>
    private static readonly string[] NodeAddresses = [ConformanceTopology.NodeIp, ConformanceTopology.InterNodeAddress, "2001:db8::1"];

    private static void Write(DirectoryInfo folder, string yaml)
    {
        var path = Path.Combine(folder.FullName, "cluster.yaml");
        File.WriteAllText(path + ".tmp", yaml);
        File.Move(path + ".tmp", path, overwrite: true);
    }

    /// <summary>
    /// <see cref="CheckAsync"/> for --mode=ebpf: the requests come from a process in the test's cgroup (the socket
    /// hooks' scope) and in the probe's namespace, one python3 process per probe making every request, each on a
    /// new socket; the same expectations.
    /// </summary>
    private static async Task<string?> CheckInCgroupAsync(ClusterSandbox sandbox, Probe probe, string cgroup)
    {
        const string requests = """
            import socket, sys, time
            proto, ip, port, count, timeout, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
            for i in range(count):
                start = time.monotonic()
                try:
                    if proto == "tcp":
                        s = socket.create_connection((ip, port), timeout=timeout)
                        s.sendall(("GET %s HTTP/1.0\r\nHost: probe\r\n\r\n" % path).encode())
                        data = b""
                        while True:
                            chunk = s.recv(4096)
                            if not chunk: break
                            data += chunk
                        s.close()
                        text = data.decode(errors="replace")
                        status = text.split(" ", 2)[1] if text.startswith("HTTP/") else "0"
                        body = text.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in text else text
                    else:
                        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        s.settimeout(timeout)
                        s.sendto(b"who", (ip, port))
                        body = s.recvfrom(2048)[0].decode(errors="replace")
                        s.close()
                        status = "0"
                    print("answer", status, "%.3f" % (time.monotonic() - start), body.replace("\n", " ").strip(), flush=True)
                except ConnectionRefusedError:
                    print("refused 0", "%.3f" % (time.monotonic() - start), flush=True)
                except Exception as e:
                    print("none 0", "%.3f" % (time.monotonic() - start), type(e).__name__, flush=True)
            """;
        var expect = probe.Expect;
        var (count, timeout, path) = expect.Kind switch
        {
            ExpectKind.Refused or ExpectKind.Http => (1, TimeBudget.For(TimeSpan.FromSeconds(3)), "/"),
            ExpectKind.NoAnswer => (1, TimeSpan.FromSeconds(1), "/cgi-bin/who"),
            ExpectKind.Sticky => (12, TimeBudget.For(TimeSpan.FromSeconds(3)), "/cgi-bin/who"),
            _ => (Math.Max(8, 12 * expect.Pods.Count), TimeBudget.For(TimeSpan.FromSeconds(3)), "/cgi-bin/who"),
        };
        var from = ConformanceTopology.Resolve(sandbox, probe.From);
        var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in new[]
        {
            "-c", "echo $$ > \"$1/cgroup.procs\" || exit 3; exec nsenter --net=\"$2\" python3 -c \"$3\" \"${@:4}\"", "probe", cgroup, from.Path, requests,
            probe.Transport == Transport.Tcp ? "tcp" : "udp", probe.To, probe.Port.ToString(CultureInfo.InvariantCulture), count.ToString(CultureInfo.InvariantCulture),
            timeout.TotalSeconds.ToString(CultureInfo.InvariantCulture), path,
        })
            start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var budget = new CancellationTokenSource(TimeSpan.FromSeconds(30) + timeout * count);
        try
        {
            await process.WaitForExitAsync(budget.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            return $"the probe process did not finish: {await stdout}";
        }
        if (process.ExitCode != 0) return $"the probe process exited with {process.ExitCode}: {await stderr}";
        var answers = (await stdout).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(line => line.Split(' ', 4)).ToList();
        if (answers.Count != count) return $"{answers.Count} of {count} requests reported: {await stdout}{await stderr}";
        switch (expect.Kind)
        {
            case ExpectKind.Refused:
                return answers[0][0] == "refused" && double.Parse(answers[0][2], CultureInfo.InvariantCulture) < TimeBudget.For(TimeSpan.FromSeconds(2)).TotalSeconds ? null : string.Join(' ', answers[0]);
            case ExpectKind.NoAnswer:
                return answers[0][0] == "answer" ? $"answered: {answers[0].ElementAtOrDefault(3)}" : null;
            case ExpectKind.Http:
                return answers[0][0] == "answer" && answers[0][1] == expect.Status.ToString(CultureInfo.InvariantCulture) && answers[0].ElementAtOrDefault(3)?.Contains(expect.BodyContains!, StringComparison.Ordinal) == true
                    ? null : string.Join(' ', answers[0]);
            default:
            {
                var seen = new Dictionary<string, int>();
                for (var i = 0; i < answers.Count; i++)
                {
                    if (answers[i][0] != "answer") return $"request {i + 1} of {count}: {string.Join(' ', answers[i])}";
                    var (pod, source) = ProxyScenario.Who(answers[i][3]);
                    if (!expect.Pods.Contains(pod)) return $"answered by {pod}, expected one of {string.Join(",", expect.Pods)}";
                    if (expect.Source is not null && source != expect.Source) return $"{pod} saw source {source}, expected {expect.Source}";
                    seen[pod] = seen.GetValueOrDefault(pod) + 1;
                }
                if (expect.Kind == ExpectKind.Sticky)
                    return seen.Count == 1 ? null : $"affinity broken: {string.Join(" ", seen.Select(kv => $"{kv.Key}({kv.Value})"))}";
                var missing = expect.Pods.Where(p => !seen.ContainsKey(p)).ToList();
                return missing.Count == 0 ? null : $"never answered by {string.Join(",", missing)} in {count} requests";
            }
        }
    }

    /// <summary>Null when the probe behaved as expected, else what happened instead.</summary>
    private static async Task<string?> CheckAsync(ClusterSandbox sandbox, Probe probe)
    {
        var from = ConformanceTopology.Resolve(sandbox, probe.From);
        var expect = probe.Expect;
        switch (expect.Kind)
        {
            case ExpectKind.Refused:
            {
                // REJECT answers at once; a DROP would run into the timeout. Both stretch on a slow machine (the VM lane).
                var result = await from.HttpGetAsync(probe.To, probe.Port, "/", TimeBudget.For(TimeSpan.FromSeconds(3)));
                return result.Outcome == ProbeOutcome.Refused && result.Elapsed < TimeBudget.For(TimeSpan.FromSeconds(2)) ? null : result.ToString();
            }
            case ExpectKind.NoAnswer:
            {
                var result = await SendAsync(from, probe, TimeSpan.FromSeconds(1));
                return result.Answered ? $"answered: {result.Body}" : null;
            }
            case ExpectKind.Http:
            {
                var result = await from.HttpGetAsync(probe.To, probe.Port, "/", TimeBudget.For(TimeSpan.FromSeconds(3)));
                return result.IsAnswered && result.StatusCode == expect.Status && result.Body.Contains(expect.BodyContains!, StringComparison.Ordinal)
                    ? null : result.ToString();
            }
            default:
            {
                // Enough requests that each of four endpoints answers at least once (miss chance < 1e-4).
                var count = expect.Kind == ExpectKind.Sticky ? 12 : Math.Max(8, 12 * expect.Pods.Count);
                var seen = new Dictionary<string, int>();
                for (var i = 0; i < count; i++)
                {
                    // An answer may take long where the machine is slow (the VM lane under load: busybox's CGI
                    // took over 3 s there); "no answer" keeps its short wait above, the lenient direction.
                    var result = await SendAsync(from, probe, TimeBudget.For(TimeSpan.FromSeconds(3)));
                    if (!result.Answered) return $"request {i + 1} of {count}: {result.Body}";
                    var (pod, source) = ProxyScenario.Who(result.Body);
                    if (!expect.Pods.Contains(pod)) return $"answered by {pod}, expected one of {string.Join(",", expect.Pods)}";
                    if (expect.Source is not null && source != expect.Source) return $"{pod} saw source {source}, expected {expect.Source}";
                    seen[pod] = seen.GetValueOrDefault(pod) + 1;
                }
                if (expect.Kind == ExpectKind.Sticky)
                    return seen.Count == 1 ? null : $"affinity broken: {string.Join(" ", seen.Select(kv => $"{kv.Key}({kv.Value})"))}";
                var missing = expect.Pods.Where(p => !seen.ContainsKey(p)).ToList();
                return missing.Count == 0 ? null : $"never answered by {string.Join(",", missing)} in {count} requests";
            }
        }
    }

    private static async Task<(bool Answered, string Body)> SendAsync(NetworkNamespace from, Probe probe, TimeSpan timeout)
    {
        if (probe.Transport == Transport.Tcp)
        {
            var result = await from.HttpGetAsync(probe.To, probe.Port, "/cgi-bin/who", timeout);
            return (result.IsAnswered, result.IsAnswered ? result.Body : result.ToString());
        }
        if (probe.SourcePort is null)
        {
            var result = await from.UdpRequestAsync(probe.To, probe.Port, "who", timeout);
            return (result.IsAnswered, result.IsAnswered ? result.Text : result.ToString());
        }
        return await UdpFromFixedPortAsync(from, probe, timeout);
    }

    /// <summary>A UDP request from a fixed source port: the same conntrack entry each time.</summary>
    private static async Task<(bool Answered, string Body)> UdpFromFixedPortAsync(NetworkNamespace from, Probe probe, TimeSpan timeout)
    {
        var destination = IPAddress.Parse(probe.To);
        using var socket = from.CreateSocket(destination.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        socket.Bind(new IPEndPoint(destination.AddressFamily == AddressFamily.InterNetwork ? IPAddress.Any : IPAddress.IPv6Any, probe.SourcePort!.Value));
        await socket.SendToAsync(Encoding.ASCII.GetBytes("who"), new IPEndPoint(destination, probe.Port));
        var buffer = new byte[2048];
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            var received = await socket.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(destination.AddressFamily == AddressFamily.InterNetwork ? IPAddress.Any : IPAddress.IPv6Any, 0), cts.Token);
            return (true, Encoding.ASCII.GetString(buffer, 0, received.ReceivedBytes));
        }
        catch (OperationCanceledException)
        {
            return (false, $"no UDP answer within {timeout.TotalSeconds}s");
        }
    }
}
