using System.Net;
using System.Text.Json;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Tests.Explain;

/// <summary>
/// <c>explain --all</c> against a daemon's desired state: which frontends differ and how, the lines and
/// JSON an operator gets. The kernel side is what a kernel explainer lists (<see cref="FrontendFate"/>),
/// the daemon side what /debug/state serves (<see cref="DesiredFrontend"/>).
/// </summary>
public sealed class ExplainDifferencesTests
{
    private static FrontendFate Kernel(string destination, PacketVerdict verdict, string? match, string? kind, params string[] endpoints)
    {
        var (address, port) = DebugState.ParseEndpoint(destination)!.Value;
        var reached = endpoints.Select(e => new ReachedEndpoint(e, 1.0 / endpoints.Length, false)).ToList();
        return new FrontendFate(new PacketQuestion(Protocol.TCP, address, port), new PacketFate(match, kind, verdict, reached, false, false, "why", []));
    }

    private static DesiredFrontend Want(string destination, string servicePort, FrontendKind kind, TrafficAction verdict, params string[] endpoints)
    {
        var (address, port) = DebugState.ParseEndpoint(destination)!.Value;
        return new DesiredFrontend(Protocol.TCP, address, port, servicePort, kind, verdict, endpoints);
    }

    /// <summary>A node whose kernel and daemon agree: the list <c>explain --all</c> would read in the sandbox.</summary>
    private static (List<FrontendFate> Kernel, List<DesiredFrontend> Daemon) Agreeing() =>
    (
        [
            Kernel("10.96.0.10:80", PacketVerdict.Forward, "test/web:http", "clusterIP", "10.0.1.3:8080", "10.0.1.2:8080"), // order does not matter
            Kernel("10.96.0.20:80", PacketVerdict.Reject, "test/lonely:http", "clusterIP"),
            Kernel("192.0.2.10:443", PacketVerdict.Drop, "test/lb:https", "loadBalancerIP"),
            Kernel("203.0.113.1:30030", PacketVerdict.Drop, "test/edge:http", "nodePort"),
        ],
        [
            Want("10.96.0.10:80", "test/web:http", FrontendKind.ClusterIP, TrafficAction.Forward, "10.0.1.2:8080", "10.0.1.3:8080"),
            Want("10.96.0.20:80", "test/lonely:http", FrontendKind.ClusterIP, TrafficAction.Reject),
            // Source ranges: the kernel's list asks as a client no range admits, so it is dropped.
            Want("192.0.2.10:443", "test/lb:https", FrontendKind.LoadBalancerIP, TrafficAction.Forward, "10.0.1.5:8443") with { SourceRanges = ["198.51.100.0/24"] },
            // A node port at every node address; the kernel's list asks at one of them.
            Want("10.244.1.1:30030", "test/edge:http", FrontendKind.NodePort, TrafficAction.Drop),
            Want("203.0.113.1:30030", "test/edge:http", FrontendKind.NodePort, TrafficAction.Drop),
        ]
    );

    [Fact]
    public void Compare_KernelAsTheDaemonWants_NoDifference()
    {
        var (kernel, daemon) = Agreeing();
        Assert.Empty(ExplainDifferences.Compare(kernel, daemon));
    }

    [Fact]
    public void Compare_KernelLostAnEndpoint_OneLineNamingBothSets()
    {
        var (kernel, daemon) = Agreeing();
        kernel[0] = Kernel("10.96.0.10:80", PacketVerdict.Forward, "test/web:http", "clusterIP", "10.0.1.2:8080");

        var difference = Assert.Single(ExplainDifferences.Compare(kernel, daemon));

        Assert.Equal(DifferenceKind.Endpoints, difference.Kind);
        Assert.Equal("tcp 10.96.0.10:80 kernel forwards to 10.0.1.2:8080, daemon wants 10.0.1.2:8080 10.0.1.3:8080", difference.Text);
        Assert.Equal(("test/web:http", "clusterIP"), (difference.ServicePort, difference.Frontend));
    }

    [Fact]
    public void Compare_DifferentVerdict_SaysWhatEachSideDoes()
    {
        var (kernel, daemon) = Agreeing();
        daemon[1] = Want("10.96.0.20:80", "test/lonely:http", FrontendKind.ClusterIP, TrafficAction.Forward, "10.0.1.6:8080");

        var difference = Assert.Single(ExplainDifferences.Compare(kernel, daemon));

        Assert.Equal(DifferenceKind.Verdict, difference.Kind);
        Assert.Equal("tcp 10.96.0.20:80 kernel rejects, daemon wants forward to 10.0.1.6:8080", difference.Text);
    }

    [Fact]
    public void Compare_FrontendOnlyTheDaemonWants_Missing()
    {
        var (kernel, daemon) = Agreeing();
        kernel.RemoveAt(0);

        var difference = Assert.Single(ExplainDifferences.Compare(kernel, daemon));

        Assert.Equal(DifferenceKind.Missing, difference.Kind);
        Assert.Null(difference.KernelVerdict);
        Assert.Equal("tcp 10.96.0.10:80 missing in the kernel, daemon wants forward to 10.0.1.2:8080 10.0.1.3:8080 (test/web:http clusterIP)", difference.Text);
    }

    [Fact]
    public void Compare_FrontendOnlyTheKernelActsOn_Extra_OneThatPasses_IsNot()
    {
        var (kernel, daemon) = Agreeing();
        kernel.Add(Kernel("10.96.0.99:80", PacketVerdict.Forward, "test/gone:http", "clusterIP", "10.0.1.9:8080"));
        kernel.Add(Kernel("10.96.0.98:80", PacketVerdict.Pass, null, null)); // a rule's address that leads nowhere of ours

        var difference = Assert.Single(ExplainDifferences.Compare(kernel, daemon));

        Assert.Equal(DifferenceKind.Extra, difference.Kind);
        Assert.Null(difference.DaemonVerdict);
        Assert.Equal("tcp 10.96.0.99:80 extra in the kernel: it forwards to 10.0.1.9:8080 (test/gone:http clusterIP), daemon wants nothing there", difference.Text);
    }

    [Fact]
    public void Compare_NodePortTheKernelHoldsNowhere_OneMissingLine_NotOnePerAddress()
    {
        var (kernel, daemon) = Agreeing();
        kernel.RemoveAll(k => k.Question.Port == 30030);

        var difference = Assert.Single(ExplainDifferences.Compare(kernel, daemon));

        Assert.Equal((DifferenceKind.Missing, "nodePort", 30030), (difference.Kind, difference.Frontend, difference.Port));
    }

    [Fact]
    public void Compare_LoadBalancerWithSourceRangesTheKernelForwards_VerdictDiffers()
    {
        var (kernel, daemon) = Agreeing();
        kernel[2] = Kernel("192.0.2.10:443", PacketVerdict.Forward, "test/lb:https", "loadBalancerIP", "10.0.1.5:8443");

        var difference = Assert.Single(ExplainDifferences.Compare(kernel, daemon));

        Assert.Equal("tcp 192.0.2.10:443 kernel forwards to 10.0.1.5:8443, daemon wants drop", difference.Text);
    }

    [Fact]
    public void KindNames_AreExplainsFrontendNames()
    {
        Assert.Equal(
            [Frontends.ClusterIP, Frontends.NodePort, Frontends.ExternalIP, Frontends.LoadBalancerIP],
            Enum.GetValues<FrontendKind>().Select(DebugState.KindName));
    }

    [Fact]
    public void DebugStateDocument_WrittenThenParsed_SameFrontends_BadDocumentsNamed()
    {
        var applied = new AppliedSync(DesiredState.Empty with { Network = new NodeNetwork { NodeName = "node-a" } }, 7, new DateTimeOffset(2024, 1, 1, 0, 0, 1, 500, TimeSpan.Zero), "iptables", [IpFamily.IPv4, IpFamily.IPv6]);
        DesiredFrontend[] frontends =
        [
            Want("10.96.0.10:80", "test/web:http", FrontendKind.ClusterIP, TrafficAction.Forward, "10.0.1.2:8080"),
            new(Protocol.UDP, IPAddress.Parse("fd00::10"), 53, "kube-system/dns:dns", FrontendKind.ExternalIP, TrafficAction.Reject, []),
            Want("192.0.2.10:443", "test/lb:https", FrontendKind.LoadBalancerIP, TrafficAction.Forward, "10.0.1.5:8443") with { SourceRanges = ["198.51.100.0/24"] },
        ];

        var parsed = DebugState.Parse(DebugState.Write(applied, frontends));

        Assert.Equal(("iptables", "node-a", 7L, applied.CompletedAt), (parsed.Mode, parsed.Node, parsed.Generation, parsed.SyncedAt));
        Assert.Equal(frontends.Select(Describe), parsed.Frontends.Select(Describe));
        Assert.Equal("udp [fd00::10]:53", parsed.Frontends[1].Name);

        Assert.Equal("not a JSON object", Assert.Throws<FormatException>(() => DebugState.Parse("[]")).Message);
        Assert.Equal("no array 'frontends'", Assert.Throws<FormatException>(() => DebugState.Parse("""{"mode":"iptables"}""")).Message);
        Assert.StartsWith("not JSON", Assert.Throws<FormatException>(() => DebugState.Parse("<html>")).Message, StringComparison.Ordinal);
    }

    private static string Describe(DesiredFrontend f) =>
        $"{f.Name} {f.ServicePort} {f.Kind} {f.Verdict} [{string.Join(" ", f.Endpoints)}] [{string.Join(" ", f.SourceRanges)}]";

    private static readonly DebugStateDocument Daemon = new("iptables", "node-a", 3, new DateTimeOffset(2024, 1, 1, 0, 0, 0, TimeSpan.Zero), []);

    [Fact]
    public void TextList_DifferencesAfterTheTable_OrOneLineForNone_OrWhySkipped()
    {
        var (kernel, daemon) = Agreeing();
        var differences = ExplainDifferences.Compare([kernel[1], Kernel("10.96.0.10:80", PacketVerdict.Forward, "test/web:http", "clusterIP", "10.0.1.2:8080")], daemon);

        var text = ExplainCommand.TextList("iptables", kernel, new DaemonComparison(DaemonState.DefaultUrl, Daemon, differences, null));
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("frontend ", lines[0], StringComparison.Ordinal);
        Assert.Equal(
        [
            "differs from the daemon: tcp 10.96.0.10:80 kernel forwards to 10.0.1.2:8080, daemon wants 10.0.1.2:8080 10.0.1.3:8080",
            "differs from the daemon: tcp 192.0.2.10:443 missing in the kernel, daemon wants drop (test/lb:https loadBalancerIP)",
            "differs from the daemon: tcp 10.244.1.1:30030 missing in the kernel, daemon wants drop (test/edge:http nodePort)",
        ], lines[(1 + kernel.Count)..]);

        var none = ExplainCommand.TextList("iptables", kernel, new DaemonComparison(DaemonState.DefaultUrl, Daemon, [], null));
        Assert.EndsWith("\nno difference from the daemon's desired state (sync 3 at 2024-01-01T00:00:00.000Z)\n", none, StringComparison.Ordinal);

        var skipped = ExplainCommand.TextList("iptables", kernel, DaemonComparison.Skipped(DaemonState.DefaultUrl, $"{DaemonState.DefaultUrl}: Connection refused (127.0.0.1:10249)"));
        Assert.EndsWith($"\ncomparison with the daemon skipped: {DaemonState.DefaultUrl}: Connection refused (127.0.0.1:10249)\n", skipped, StringComparison.Ordinal);

        var disabled = ExplainCommand.TextList("iptables", kernel, DaemonComparison.Disabled);
        Assert.Equal(1 + kernel.Count, disabled.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length); // the table only
    }

    [Fact]
    public void JsonList_AnObject_FrontendsWithExplainsKeys_DifferencesNullWhenNotCompared()
    {
        var (kernel, daemon) = Agreeing();
        var differences = ExplainDifferences.Compare(kernel[1..], daemon);

        var compared = JsonDocument.Parse(ExplainCommand.JsonList("iptables", kernel[1..], new DaemonComparison(DaemonState.DefaultUrl, Daemon, differences, null))).RootElement;

        Assert.Equal(["mode", "frontends", "daemon", "differences"], compared.EnumerateObject().Select(p => p.Name));
        Assert.All(compared.GetProperty("frontends").EnumerateArray(), f => Assert.Equal(
            ["protocol", "destination", "match", "frontend", "verdict", "endpoints", "masquerade", "affinity", "reason"], f.EnumerateObject().Select(p => p.Name)));
        var daemonPart = compared.GetProperty("daemon");
        Assert.Equal((true, 3, "2024-01-01T00:00:00.000Z", JsonValueKind.Null),
            (daemonPart.GetProperty("compared").GetBoolean(), daemonPart.GetProperty("generation").GetInt32(), daemonPart.GetProperty("syncedAt").GetString(), daemonPart.GetProperty("skipped").ValueKind));
        var missing = Assert.Single(compared.GetProperty("differences").EnumerateArray());
        Assert.Equal(
            """{"protocol":"tcp","destination":"10.96.0.10:80","difference":"missing","servicePort":"test/web:http","frontend":"clusterIP","kernel":null,"daemon":{"verdict":"forward","endpoints":["10.0.1.2:8080","10.0.1.3:8080"]},"text":"tcp 10.96.0.10:80 missing in the kernel, daemon wants forward to 10.0.1.2:8080 10.0.1.3:8080 (test/web:http clusterIP)"}""",
            JsonSerializer.Serialize(missing));

        var skipped = JsonDocument.Parse(ExplainCommand.JsonList("iptables", kernel, DaemonComparison.Skipped(DaemonState.DefaultUrl, "no answer"))).RootElement;
        Assert.Equal(JsonValueKind.Null, skipped.GetProperty("differences").ValueKind);
        Assert.Equal((false, "no answer"), (skipped.GetProperty("daemon").GetProperty("compared").GetBoolean(), skipped.GetProperty("daemon").GetProperty("skipped").GetString()));
    }

    [Theory]
    [InlineData("127.0.0.1:10249/debug/state")]
    [InlineData("ftp://127.0.0.1/debug/state")]
    [InlineData("debug/state")]
    public void StateUrl_NotHttp_UsageError(string url)
    {
        var error = Assert.Throws<UsageException>(() => DaemonState.ParseUrl(url));
        Assert.Equal($"--state-url {url}: not an http:// URL (for example {DaemonState.DefaultUrl}; \"\" skips the comparison)", error.Message);
        Assert.Equal(new Uri(DaemonState.DefaultUrl), DaemonState.ParseUrl(DaemonState.DefaultUrl)); // positive control
    }

    [Fact]
    public async Task Explain_StateUrlWithoutAll_UsageError_BeforeTheKernelIsRead()
    {
        var error = await Assert.ThrowsAsync<UsageException>(() =>
            ExplainCommand.RunAsync("tcp", "10.96.0.10:80", null, "iptables", "text", false, DaemonState.DefaultUrl, TextWriter.Null, CancellationToken.None));
        Assert.Equal("--state-url is for explain --all (it compares every frontend with the daemon's desired state)", error.Message);
        var bad = await Assert.ThrowsAsync<UsageException>(() =>
            ExplainCommand.RunAsync(null, null, null, "iptables", "text", true, "nowhere", TextWriter.Null, CancellationToken.None));
        Assert.StartsWith("--state-url nowhere: not an http:// URL", bad.Message, StringComparison.Ordinal);
    }
}
