using System.Text.Json;
using Xunit.Abstractions;
using static ProxyPlanes.Kernel.Tests.ExplainTests;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// <c>proxyplanes explain --all</c> against the running daemon's desired state (/debug/state on its
/// metrics address, in the node namespace): none while the kernel holds what the daemon wants; a
/// rule removed behind the daemon's back names exactly that frontend; an unreachable daemon is one line.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class ExplainDaemonTests(ITestOutputHelper output)
{
    private const string WebIP = "10.96.0.10";

    /// <summary>ProxyScenario's daemon serves metrics on the default address, 127.0.0.1:10249, inside the node namespace, where explain runs.</summary>
    private const string StateUrl = "http://127.0.0.1:10249/debug/state";

    private static JsonElement[] Differences(string json) =>
        [.. JsonDocument.Parse(json).RootElement.GetProperty("differences").EnumerateArray()];

    private static string[] Strings(JsonElement array) => [.. array.EnumerateArray().Select(e => e.GetString()!)];

    [Theory]
    [InlineData("iptables")]
    [InlineData("nftables")]
    public async Task ExplainAll_NoDifferenceFromTheDaemon_ThenNamesTheFrontendWhoseRuleWasRemoved(string mode)
    {
        await using var scenario = await ProxyScenario.CreateAsync(pods: 2);
        scenario.WriteManifest("web.yaml", ProxyScenario.Service("web", WebIP) + "\n---\n" + ProxyScenario.Slice("web", scenario.PodIp(0), scenario.PodIp(1)));
        scenario.WriteManifest("lonely.yaml", ProxyScenario.Service("lonely", "10.96.0.20", nodePort: 30020, type: "NodePort"));
        scenario.WriteManifest("edge.yaml", ProxyScenario.Service("edge", "10.96.0.30", nodePort: 30030, type: "NodePort", extraSpec: "  externalTrafficPolicy: Local")
            + "\n---\n" + ProxyScenario.Slice("edge", scenario.PodIp(0)));
        await scenario.StartProxyAsync(mode: mode);
        var node = scenario.Sandbox.Node;
        var (pod0, pod1) = ($"{scenario.PodIp(0)}:8080", $"{scenario.PodIp(1)}:8080");

        // Positive control: the kernel holds what the daemon wants, node ports and rejects included.
        var before = await ExplainAsync(node, "--all", "-o", "json", "--state-url", StateUrl);
        output.WriteLine(before.StandardOutput);
        Assert.True(before.Succeeded, before.StandardError);
        var daemon = JsonDocument.Parse(before.StandardOutput).RootElement.GetProperty("daemon");
        Assert.True(daemon.GetProperty("compared").GetBoolean(), daemon.ToString());
        Assert.True(daemon.GetProperty("generation").GetInt64() >= 1);
        Assert.Empty(Differences(before.StandardOutput));
        var frontends = JsonDocument.Parse(before.StandardOutput).RootElement.GetProperty("frontends").EnumerateArray().Select(f => f.GetProperty("destination").GetString()).ToArray();
        Assert.Contains($"{scenario.Sandbox.NodeIp}:30020", frontends); // the comparison covered node ports too
        var quiet = await ExplainAsync(node, "--all", "--state-url", StateUrl);
        Assert.Matches(@"\nno difference from the daemon's desired state \(sync \d+ at [0-9T:.\-]+Z\)\n$", quiet.StandardOutput);

        // Behind the daemon's back: remove web's jump to its first endpoint (the probability rule; nftables: its endpoint-slots element).
        var removed = mode == "iptables" ? await RemoveIptablesSpreadAsync(node) : await RemoveNftablesSpreadAsync(node);
        Assert.True(removed.Succeeded, removed.StandardError);

        var after = await ExplainAsync(node, "--all", "-o", "json", "--state-url", StateUrl);
        Assert.True(after.Succeeded, after.StandardError);
        var difference = Assert.Single(Differences(after.StandardOutput));
        Assert.Equal(("tcp", $"{WebIP}:80", "endpoints", "test/web:http", "clusterIP"),
            (difference.GetProperty("protocol").GetString(), difference.GetProperty("destination").GetString(), difference.GetProperty("difference").GetString(),
             difference.GetProperty("servicePort").GetString(), difference.GetProperty("frontend").GetString()));
        Assert.Equal([pod1], Strings(difference.GetProperty("kernel").GetProperty("endpoints")));
        Assert.Equal(new[] { pod0, pod1 }.Order(StringComparer.Ordinal), Strings(difference.GetProperty("daemon").GetProperty("endpoints")));

        var text = await ExplainAsync(node, "--all", "--state-url", StateUrl);
        output.WriteLine(text.StandardOutput);
        var lines = text.StandardOutput.Split('\n').Where(l => l.StartsWith("differs from the daemon: ", StringComparison.Ordinal)).ToArray();
        Assert.Equal($"differs from the daemon: tcp {WebIP}:80 kernel forwards to {pod1}, daemon wants {string.Join(" ", new[] { pod0, pod1 }.Order(StringComparer.Ordinal))}", Assert.Single(lines));

        // Nothing listens at the URL: the table, one line saying why the comparison was skipped, exit 0.
        var unreachable = await ExplainAsync(node, "--all", "--state-url", "http://127.0.0.1:1/debug/state");
        Assert.Equal(0, unreachable.ExitCode);
        Assert.StartsWith("frontend ", unreachable.StandardOutput, StringComparison.Ordinal);
        Assert.Matches(@"\ncomparison with the daemon skipped: http://127\.0\.0\.1:1/debug/state: [^\n]+\n$", unreachable.StandardOutput);
        Assert.Equal("", unreachable.StandardError);

        // --state-url="" (the shell passes "--state-url="): not compared, and not a line about it.
        var disabled = await ExplainAsync(node, "--all", "-o", "json", "--state-url=");
        Assert.True(disabled.Succeeded, disabled.StandardError);
        var off = JsonDocument.Parse(disabled.StandardOutput).RootElement;
        Assert.Equal((false, "--state-url is empty", JsonValueKind.Null),
            (off.GetProperty("daemon").GetProperty("compared").GetBoolean(), off.GetProperty("daemon").GetProperty("skipped").GetString(), off.GetProperty("differences").ValueKind));
    }
}
