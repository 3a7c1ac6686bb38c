using System.Text.Json;
using ProxyPlanes.Sandbox;
using ProxyPlanes.Sandboxed;
using Xunit.Abstractions;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// <c>proxyplanes explain</c> as an operator runs it on the node: it reads the kernel, so a rule
/// removed behind the daemon's back shows in its answer, and real packets agree. (Every row of the
/// conformance table is checked against explain in ConformanceTests.) Bad input is one line, exit 2.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class ExplainTests(ITestOutputHelper output)
{
    private const string WebIP = "10.96.0.10";

    internal static async Task<ExecResult> ExplainAsync(NetworkNamespace node, params string[] args)
    {
        var (file, prefix) = ProxyProcess.Executable(ProxyProcess.Daemon);
        return await node.ExecAsync([file, .. prefix, "explain", .. args], TimeSpan.FromSeconds(60));
    }

    private static string[] Endpoints(string json) =>
        [.. JsonDocument.Parse(json).RootElement.GetProperty("endpoints").EnumerateArray().Select(e => e.GetString()!).Order(StringComparer.Ordinal)];

    [Theory]
    [InlineData("iptables")]
    [InlineData("nftables")]
    public async Task ExplainFollowsTheKernel_AndRealPacketsAgree(string mode)
    {
        await using var scenario = await ProxyScenario.CreateAsync(pods: 2);
        scenario.WriteManifest("web.yaml", ProxyScenario.Service("web", WebIP) + "\n---\n" + ProxyScenario.Slice("web", scenario.PodIp(0), scenario.PodIp(1)));
        scenario.WriteManifest("lonely.yaml", ProxyScenario.Service("lonely", "10.96.0.20", nodePort: 30020, type: "NodePort"));
        scenario.WriteManifest("edge.yaml", ProxyScenario.Service("edge", "10.96.0.30", nodePort: 30030, type: "NodePort", extraSpec: "  externalTrafficPolicy: Local")
            + "\n---\n" + ProxyScenario.Slice("edge", scenario.PodIp(0)));
        await scenario.StartProxyAsync(mode: mode);
        var node = scenario.Sandbox.Node;

        // Both endpoints, with the keys the issue fixes; the mode found from the kernel (no --mode).
        var before = await ExplainAsync(node, "tcp", $"{WebIP}:80", "-o", "json");
        Assert.True(before.Succeeded, before.StandardError);
        var keys = JsonDocument.Parse(before.StandardOutput).RootElement.EnumerateObject().Select(p => p.Name).ToArray();
        Assert.Equal(["match", "frontend", "verdict", "endpoints", "masquerade", "affinity", "reason"], keys);
        Assert.Equal([$"{scenario.PodIp(0)}:8080", $"{scenario.PodIp(1)}:8080"], Endpoints(before.StandardOutput));
        var text = await ExplainAsync(node, "tcp", $"{WebIP}:80");
        output.WriteLine(text.StandardOutput);
        Assert.Matches(@"match\s+test/web:http \(clusterIP\)", text.StandardOutput);

        // --all lists every frontend the kernel holds.
        var all = await ExplainAsync(node, "--all");
        output.WriteLine(all.StandardOutput);
        Assert.True(all.Succeeded, all.StandardError);
        Assert.Matches($@"tcp {WebIP.Replace(".", "\\.", StringComparison.Ordinal)}:80\s+test/web:http\s+clusterIP\s+forward\s+{scenario.PodIp(0).Replace(".", "\\.", StringComparison.Ordinal)}:8080 {scenario.PodIp(1).Replace(".", "\\.", StringComparison.Ordinal)}:8080", all.StandardOutput);
        Assert.Matches(@"tcp 10\.96\.0\.20:80\s+test/lonely:http\s+clusterIP\s+reject", all.StandardOutput);

        // Behind the daemon's back: remove the jump to the first endpoint (iptables: the probability rule; nftables: its slots now go to the last).
        var removed = mode == "iptables" ? await RemoveIptablesSpreadAsync(node) : await RemoveNftablesSpreadAsync(node);
        Assert.True(removed.Succeeded, removed.StandardError);

        var after = await ExplainAsync(node, "tcp", $"{WebIP}:80", "-o", "json");
        Assert.Equal([$"{scenario.PodIp(1)}:8080"], Endpoints(after.StandardOutput));
        // The real packets: only that endpoint answers now (the proxy has not repaired it: nothing changed in its eyes).
        var answers = await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80, count: 12);
        Assert.Equal(new Dictionary<string, int> { ["pod-1"] = 12 }, answers);

        // A node port without endpoints: rejected, named as such; a packet to nothing of ours passes.
        var lonely = JsonDocument.Parse((await ExplainAsync(node, "tcp", $"{scenario.Sandbox.NodeIp}:30020", "-o", "json")).StandardOutput).RootElement;
        Assert.Equal(("test/lonely:http", "nodePort", "reject", "no endpoints"),
            (lonely.GetProperty("match").GetString(), lonely.GetProperty("frontend").GetString(), lonely.GetProperty("verdict").GetString(), lonely.GetProperty("reason").GetString()));
        var nothing = JsonDocument.Parse((await ExplainAsync(node, "tcp", "10.96.0.99:80", "-o", "json")).StandardOutput).RootElement;
        Assert.Equal("pass", nothing.GetProperty("verdict").GetString());

        // A node port with externalTrafficPolicy Local: this node's endpoint, the client's source kept.
        var edge = await ExplainAsync(node, "tcp", $"{scenario.Sandbox.NodeIp}:30030", "--from", scenario.Sandbox.ClientIp);
        output.WriteLine(edge.StandardOutput);
        Assert.Matches(@"match\s+test/edge:http \(nodePort\)\nverdict\s+forward\nendpoints\s+" + scenario.PodIp(0).Replace(".", "\\.", StringComparison.Ordinal) + @":8080\s+100\.0%\n", edge.StandardOutput);
        Assert.Matches(@"masquerade\s+no\n", edge.StandardOutput);
        var answer = await scenario.Sandbox.Client.HttpGetAsync(scenario.Sandbox.NodeIp, 30030, "/cgi-bin/who", TimeSpan.FromSeconds(3));
        Assert.Equal(("pod-0", scenario.Sandbox.ClientIp), ProxyScenario.Who(answer.Body));
        output.WriteLine((await ExplainAsync(node, "tcp", "10.96.0.20:80")).StandardOutput);

        if (mode != "nftables") return;
        // A map element removed behind the daemon's back: the node port is no longer ours, and nothing on the node listens there.
        var deleted = await node.ExecAsync(["nft", "delete", "element", "ip", "proxyplanes", "service-nodeports", "{ tcp . 30030 }"], TimeSpan.FromSeconds(30));
        Assert.True(deleted.Succeeded, deleted.StandardError);
        var gone = JsonDocument.Parse((await ExplainAsync(node, "tcp", $"{scenario.Sandbox.NodeIp}:30030", "--from", scenario.Sandbox.ClientIp, "-o", "json")).StandardOutput).RootElement;
        Assert.Equal(("pass", JsonValueKind.Null), (gone.GetProperty("verdict").GetString(), gone.GetProperty("match").ValueKind));
        var refused = await scenario.Sandbox.Client.HttpGetAsync(scenario.Sandbox.NodeIp, 30030, "/cgi-bin/who", TimeSpan.FromSeconds(3));
        Assert.Equal(ProbeOutcome.Refused, refused.Outcome);
    }

    internal static async Task<ExecResult> RemoveIptablesSpreadAsync(NetworkNamespace node)
    {
        var save = await node.ExecAsync("iptables-nft-save", "-t", "nat");
        var jump = save.StandardOutput.Split('\n').Single(l => l.StartsWith("-A KUBE-SVC-", StringComparison.Ordinal) && l.Contains("statistic", StringComparison.Ordinal));
        return await node.ExecAsync(["iptables-nft", "-t", "nat", "-D", .. Words(jump[3..])], TimeSpan.FromSeconds(30));
    }

    /// <summary>
    /// The nftables counterpart of deleting the spread's first jump: web's endpoints are elements of
    /// <c>endpoint-slots-XX</c> (the map and the <c>offset</c> of its pool's dnat rule), and the slots of
    /// its first endpoint are pointed at its last one (one <c>nft</c> transaction: delete and add the
    /// element), so every new flow goes to the last endpoint.
    /// </summary>
    internal static async Task<ExecResult> RemoveNftablesSpreadAsync(NetworkNamespace node)
    {
        var listing = await node.CheckedExecAsync(["nft", "-j", "list", "table", "ip", "proxyplanes"], TimeSpan.FromSeconds(30));
        var items = JsonDocument.Parse(listing.StandardOutput).RootElement.GetProperty("nftables").EnumerateArray().ToList();
        var dnat = items
            .Where(i => i.TryGetProperty("rule", out var r) && r.GetProperty("chain").GetString()!.EndsWith("-test/web/tcp/http", StringComparison.Ordinal))
            .Select(i => System.Text.RegularExpressions.Regex.Match(i.GetRawText(), @"""offset"":\s*(-?\d+)[^@]*""@(endpoint-slots-[a-z]+-[0-9a-f]+)"""))
            .First(m => m.Success);
        // nft -j writes the offset as a signed 32-bit number.
        var (offset, name) = ((long)(uint)int.Parse(dnat.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), dnat.Groups[2].Value);
        var map = items.Single(i => i.TryGetProperty("map", out var m) && m.GetProperty("name").GetString() == name).GetProperty("map");
        var slots = map.GetProperty("elem").EnumerateArray()
            .Select(e => (Low: e[0].GetProperty("range")[0].GetInt64(), High: e[0].GetProperty("range")[1].GetInt64(), To: e[1].GetProperty("concat")))
            .Where(e => e.Low >= offset && e.Low < offset + 4096).OrderBy(e => e.Low).ToList();
        var (first, last) = (slots[0], slots[^1]);
        var key = $"{first.Low}-{first.High}";
        var target = $"{last.To[0].GetString()} . {last.To[1].GetInt32()}";
        return await node.ExecAsync(["nft", $"delete element ip proxyplanes {name} {{ {key} }} ; add element ip proxyplanes {name} {{ {key} : {target} }}"], TimeSpan.FromSeconds(30));
    }

    /// <summary>Splits an iptables-save rule into arguments, keeping a quoted comment whole.</summary>
    internal static string[] Words(string rule)
    {
        var words = new List<string>();
        var i = 0;
        while (i < rule.Length)
        {
            if (rule[i] == ' ') { i++; continue; }
            var quoted = rule[i] == '"';
            var end = quoted ? rule.IndexOf('"', i + 1) + 1 : rule.IndexOf(' ', i);
            if (end <= 0) end = rule.Length;
            words.Add(quoted ? rule[(i + 1)..(end - 1)] : rule[i..end]);
            i = end;
        }
        return [.. words];
    }

    [Theory]
    [InlineData(new[] { "tcp", "10.0.0.1" }, "proxyplanes: '10.0.0.1' is not IP:PORT (write an IPv6 address as [IP]:PORT)")]
    [InlineData(new[] { "sctp", "1.2.3.4:99999" }, "proxyplanes: '99999' in '1.2.3.4:99999' is not a port (1-65535)")]
    [InlineData(new[] { "icmp", "1.2.3.4:80" }, "proxyplanes: 'icmp' is not a protocol; use tcp, udp or sctp")]
    [InlineData(new[] { "tcp", "1.2.3.4:80", "--mode", "bogus" }, "proxyplanes: --mode: 'bogus' is not a mode; use one of iptables, nftables, ipvs, ebpf")]
    [InlineData(new[] { "tcp", "1.2.3.4:80", "--from", "fd00::1" }, "proxyplanes: --from fd00::1 and 1.2.3.4 are of different IP families")]
    [InlineData(new string[0], "proxyplanes: explain needs a packet: PROTO IP:PORT (for example: explain tcp 10.96.0.10:80), or --all")]
    public async Task BadInput_OneLine_Exit2(string[] args, string expected)
    {
        var result = await ProxyCli.RunInNamespaceAsync(["explain", .. args]);

        Assert.Equal(2, result.ExitCode);
        Assert.Equal(expected, result.StandardError.Trim());
    }

    [Fact]
    public async Task NoStateOfOurs_IptablesAsked_Passes_NotAsked_SaysSo()
    {
        // Positive control for the bad-input rows: a well-formed question in an empty namespace is answered.
        var asked = await ProxyCli.RunInNamespaceAsync(["explain", "tcp", "10.96.0.10:80", "--mode", "iptables", "-o", "json"]);
        Assert.Equal(0, asked.ExitCode);
        Assert.Equal("pass", JsonDocument.Parse(asked.StandardOutput).RootElement.GetProperty("verdict").GetString());

        var nftables = await ProxyCli.RunInNamespaceAsync(["explain", "tcp", "10.96.0.10:80", "--mode", "nftables", "-o", "json"]);
        Assert.Equal(0, nftables.ExitCode);
        var fate = JsonDocument.Parse(nftables.StandardOutput).RootElement;
        Assert.Equal(("pass", "no table ip proxyplanes on this node"), (fate.GetProperty("verdict").GetString(), fate.GetProperty("reason").GetString()));

        var guessed = await ProxyCli.RunInNamespaceAsync(["explain", "tcp", "10.96.0.10:80"]);
        Assert.Equal(1, guessed.ExitCode);
        // Every mode explain reads is named, in the registry's order.
        Assert.StartsWith("proxyplanes: no state of iptables, nftables, ipvs, ebpf found in this node's kernel", guessed.StandardError.Trim(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Nftables_NftFails_OneClearLine_Exit1()
    {
        // An nft that fails as it does without CAP_NET_ADMIN, first on the PATH.
        var bin = Directory.CreateTempSubdirectory("proxyplanes-failing-nft-");
        try
        {
            var nft = Path.Combine(bin.FullName, "nft");
            File.WriteAllText(nft, "#!/bin/sh\necho 'Error: Could not process rule: Operation not permitted' >&2\necho 'list table ip proxyplanes' >&2\nexit 1\n");
            File.SetUnixFileMode(nft, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            using var ns = NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-cli");
            var (file, prefix) = ProxyProcess.Executable(ProxyProcess.Daemon);

            var result = await ns.ExecAsync(["env", $"PATH={bin.FullName}:{Environment.GetEnvironmentVariable("PATH")}", file, .. prefix, "explain", "tcp", "10.96.0.10:80", "--mode", "nftables"], TimeSpan.FromSeconds(60));

            Assert.Equal(1, result.ExitCode);
            Assert.Equal("proxyplanes: nft -j list table ip proxyplanes failed: Error: Could not process rule: Operation not permitted", result.StandardError.Trim());
        }
        finally
        {
            bin.Delete(recursive: true);
        }
    }
}
