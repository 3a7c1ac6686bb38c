using System.Diagnostics;
using System.Net.NetworkInformation;
using System.Security.Cryptography;
using ProxyPlanes.Sandbox;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// One sandbox (client, node, pods web-0 and web-1, remote node node-b with pod far-0) shared by the read-only traffic
/// tests of <see cref="SandboxTests"/>.
/// </summary>
public sealed class SandboxFixture : IAsyncLifetime
{
    private ClusterSandbox? _sandbox;

    public ClusterSandbox Sandbox => _sandbox ?? throw new InvalidOperationException("The sandbox fixture failed to initialize.");

    public SandboxPod Web0 => Sandbox.Pods["web-0"];

    public SandboxPod Web1 => Sandbox.Pods["web-1"];

    public RemoteNode NodeB => Sandbox.RemoteNodes.Single();

    public SandboxPod Far0 => Sandbox.Pods["far-0"];

    public async Task InitializeAsync()
    {
        _sandbox = await ClusterSandbox.CreateAsync();
        try
        {
            await _sandbox.AddPodAsync("web-0");
            await _sandbox.AddPodAsync("web-1", 8080, 9090);
            var nodeB = await _sandbox.AddRemoteNodeAsync("node-b");
            await nodeB.AddPodAsync("far-0", 8080);
        }
        catch
        {
            await _sandbox.DisposeAsync();
            _sandbox = null;
            throw;
        }
    }

    public async Task DisposeAsync()
    {
        if (_sandbox is not null)
        {
            await _sandbox.DisposeAsync();
        }
    }
}

/// <summary>
/// Real packets through real namespaces (needs root). Only namespaces created here are touched, and traffic only goes
/// to addresses inside them.
/// </summary>
public sealed class SandboxTests(SandboxFixture fixture) : IClassFixture<SandboxFixture>
{
    private static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(3);
    private static readonly TimeSpan ShortTimeout = TimeSpan.FromMilliseconds(300);

    private ClusterSandbox Sandbox => fixture.Sandbox;

    [Fact(Timeout = 20_000)]
    public async Task HttpGetAsync_ClientToPodIp_AnswersWithPodNameAndClientSource()
    {
        foreach (var pod in new[] { fixture.Web0, fixture.Web1 })
        {
            var result = await Sandbox.Client.HttpGetAsync(pod.IP, 8080, "/cgi-bin/who", ProbeTimeout);

            Assert.True(result.Outcome == ProbeOutcome.Answered, result.ToString());
            Assert.Equal(200, result.StatusCode);
            Assert.Equal($"pod={pod.Name} src=203.0.113.10", result.Body);
        }
    }

    [Fact(Timeout = 20_000)]
    public async Task HttpGetAsync_SecondPortOfPod_Answers()
    {
        var result = await Sandbox.Client.HttpGetAsync(fixture.Web1.IP, 9090, "/cgi-bin/who", ProbeTimeout);

        Assert.True(result.IsAnswered, result.ToString());
        Assert.Equal("pod=web-1 src=203.0.113.10", result.Body);
    }

    [Fact(Timeout = 20_000)]
    public async Task HttpGetAsync_ClientToPodIpv6_AnswersWithClientIpv6Source()
    {
        var result = await Sandbox.Client.HttpGetAsync(fixture.Web0.IPv6, 8080, "/cgi-bin/who", ProbeTimeout);

        Assert.True(result.IsAnswered, result.ToString());
        Assert.Equal($"pod=web-0 src={Sandbox.ClientIpv6}", result.Body);
    }

    [Fact(Timeout = 20_000)]
    public async Task HttpGetAsync_PortWithoutListener_ReturnsRefusedFast()
    {
        var stopwatch = Stopwatch.StartNew();
        var result = await Sandbox.Client.HttpGetAsync(fixture.Web0.IP, 8081, "/cgi-bin/who", ProbeTimeout);
        stopwatch.Stop();

        Assert.True(result.Outcome == ProbeOutcome.Refused, result.ToString());
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(1), $"took {stopwatch.Elapsed}");
        Assert.Equal(string.Empty, result.Body);
    }

    [Fact(Timeout = 20_000)]
    public async Task HttpGetAsync_NodeAndPodSources_SeenUnmasqueraded()
    {
        var fromNode = await Sandbox.Node.HttpGetAsync(fixture.Web0.IP, 8080, "/cgi-bin/who", ProbeTimeout);
        var fromPod = await fixture.Web1.Namespace.HttpGetAsync(fixture.Web0.IP, 8080, "/cgi-bin/who", ProbeTimeout);

        Assert.Equal($"pod=web-0 src={Sandbox.NodePodGatewayIp}", fromNode.Body);
        Assert.Equal($"pod=web-0 src={fixture.Web1.IP}", fromPod.Body);
    }

    [Fact(Timeout = 20_000)]
    public async Task HttpGetAsync_PodAddressNobodyHas_ReturnsTimedOut()
    {
        // Inside the pod CIDR but unassigned: the node sends it down its default route to the client, which drops it.
        var result = await Sandbox.Client.HttpGetAsync("10.244.1.250", 80, "/", ShortTimeout);

        Assert.True(result.Outcome == ProbeOutcome.TimedOut, result.ToString());
        Assert.True(result.Elapsed < TimeSpan.FromSeconds(2), $"took {result.Elapsed}");
    }

    [Fact(Timeout = 20_000)]
    public async Task HttpGetAsync_NamespaceWithoutRoutes_ReturnsUnreachable()
    {
        using var bare = NetworkNamespace.Create($"pp{RandomNumberGenerator.GetHexString(5, lowercase: true)}-bare");

        var result = await bare.HttpGetAsync("10.244.1.2", 8080, "/", ShortTimeout);

        Assert.True(result.Outcome == ProbeOutcome.Unreachable, result.ToString());
    }

    [Fact(Timeout = 20_000)]
    public async Task HttpGetAsync_NodeAnswersIcmpHostUnreachable_ReturnsUnreachable()
    {
        // An 'unreachable' route makes the node answer with ICMP host unreachable; only this test uses .251.
        await Sandbox.Node.ExecAsync("ip", "route", "replace", "unreachable", "10.244.1.251/32");

        var tcp = await Sandbox.Client.HttpGetAsync("10.244.1.251", 80, "/", ProbeTimeout);
        var udp = await Sandbox.Client.UdpRequestAsync("10.244.1.251", 53, "hello", ProbeTimeout);

        Assert.True(tcp.Outcome == ProbeOutcome.Unreachable, tcp.ToString());
        Assert.True(udp.Outcome == ProbeOutcome.Unreachable, udp.ToString());
        Assert.True(tcp.Elapsed < TimeSpan.FromSeconds(1), $"took {tcp.Elapsed}");
    }

    [Fact(Timeout = 20_000)]
    public async Task UdpRequestAsync_ClientToPod_AnswersWithPodNameAndClientSource()
    {
        var v4 = await Sandbox.Client.UdpRequestAsync(fixture.Web1.IP, 9090, "hello", ProbeTimeout);
        var v6 = await Sandbox.Client.UdpRequestAsync(fixture.Web1.IPv6, 9090, "hello", ProbeTimeout);

        Assert.True(v4.IsAnswered, v4.ToString());
        Assert.Equal("pod=web-1 src=203.0.113.10", v4.Text);
        Assert.True(v6.IsAnswered, v6.ToString());
        Assert.Equal($"pod=web-1 src={Sandbox.ClientIpv6}", v6.Text);
    }

    [Fact(Timeout = 20_000)]
    public async Task UdpRequestAsync_PortWithoutListener_ReturnsRefused()
    {
        var result = await Sandbox.Client.UdpRequestAsync(fixture.Web0.IP, 9999, "hello", ProbeTimeout);

        Assert.True(result.Outcome == ProbeOutcome.Refused, result.ToString());
        Assert.True(result.Elapsed < TimeSpan.FromSeconds(1), $"took {result.Elapsed}");
    }

    [Fact]
    public void Run_InNodeNamespace_SeesOnlyNodeInterfaces()
    {
        var inside = Sandbox.Node.Run(() => NetworkInterface.GetAllNetworkInterfaces().Select(i => i.Name).Order().ToArray());
        var outside = NetworkInterface.GetAllNetworkInterfaces().Select(i => i.Name).ToArray();

        Assert.Subset(inside.ToHashSet(), new[] { "lo", fixture.Web0.HostInterface, fixture.Web1.HostInterface, Sandbox.PrimaryClient.HostInterface, fixture.NodeB.HostInterface }.ToHashSet());
        Assert.All(inside, name => Assert.True(name == "lo" || name.StartsWith("vpod", StringComparison.Ordinal) || name.StartsWith("vext", StringComparison.Ordinal) || name.StartsWith("vnode", StringComparison.Ordinal), name));
        Assert.DoesNotContain(fixture.Web0.HostInterface, outside);
    }

    [Fact]
    public void Run_ActionThrows_ExceptionPropagates()
    {
        var thrown = Assert.Throws<InvalidOperationException>(() => Sandbox.Node.Run<int>(() => throw new InvalidOperationException("boom")));

        Assert.Equal("boom", thrown.Message);
    }

    [Fact(Timeout = 20_000)]
    public async Task ExecAsync_InPod_ReturnsOutputAndExitCode()
    {
        var addresses = await fixture.Web0.Namespace.ExecAsync("ip", "-o", "addr", "show", "dev", "eth0");
        var failed = await fixture.Web0.Namespace.ExecAsync("sh", "-c", "echo oops >&2; exit 3");

        Assert.Equal(0, addresses.ExitCode);
        Assert.Contains($"{fixture.Web0.IP}/32", addresses.StandardOutput, StringComparison.Ordinal);
        Assert.Equal(3, failed.ExitCode);
        Assert.Equal("oops", failed.StandardError.Trim());
    }

    [Fact(Timeout = 20_000)]
    public async Task CheckedExecAsync_CommandFails_ThrowsWithExitCodeAndStderr()
    {
        var thrown = await Assert.ThrowsAsync<SandboxCommandException>(() => Sandbox.Node.CheckedExecAsync("sh", "-c", "echo nope >&2; exit 4"));

        Assert.Equal(4, thrown.ExitCode);
        Assert.Contains("nope", thrown.Message, StringComparison.Ordinal);
    }

    [Fact(Timeout = 20_000)]
    public async Task StartProcess_LongRunningCommand_CapturesOutputAndKillsByPid()
    {
        var process = Sandbox.Client.StartProcess("sh", ["-c", "echo started; echo warn >&2; exec sleep 30"]);
        try
        {
            await WaitUntilAsync(() => process.StandardOutputLines.Contains("started") && process.StandardErrorLines.Contains("warn"), TimeSpan.FromSeconds(3));

            // ip netns exec execs, so the PID is the command's own; by now sh has exec'd sleep.
            await WaitUntilAsync(() => ReadComm(process.Pid) == "sleep", TimeSpan.FromSeconds(3));
            Assert.False(process.HasExited);

            Assert.True(await process.KillAsync(TimeSpan.FromSeconds(3)));
            Assert.True(process.HasExited);
            Assert.False(Directory.Exists($"/proc/{process.Pid}"));
        }
        finally
        {
            await process.KillAsync();
        }
    }

    [Fact(Timeout = 20_000)]
    public async Task AddExternalClientAsync_SecondClient_GetsNextAddressAndReachesPods()
    {
        var second = await Sandbox.AddExternalClientAsync("second");

        var result = await second.Namespace.HttpGetAsync(fixture.Web0.IP, 8080, "/cgi-bin/who", ProbeTimeout);

        Assert.Equal("203.0.113.11", second.IP);
        Assert.Equal($"{Sandbox.Prefix}-ext-second", second.Namespace.Name);
        Assert.Equal("pod=web-0 src=203.0.113.11", result.Body);
    }

    [Fact(Timeout = 20_000)]
    public async Task RemovePodAsync_ExistingPod_RemovesItsNamespaceVethAndServers()
    {
        var sandbox = await ClusterSandbox.CreateAsync();
        try
        {
            var gone = await sandbox.AddPodAsync("gone");
            var kept = await sandbox.AddPodAsync("kept");
            var pids = gone.Servers.Select(s => s.Pid).ToArray();

            await sandbox.RemovePodAsync("gone");

            Assert.False(sandbox.Pods.ContainsKey("gone"));
            Assert.DoesNotContain(gone.Namespace.Name, await ListNamespacesAsync());
            Assert.All(pids, pid => Assert.False(IsLiveBusybox(pid), $"process {pid} still runs"));
            Assert.False(Directory.Exists(gone.ContentDirectory));
            var routes = await sandbox.Node.CheckedExecAsync("ip", "-o", "link", "show");
            Assert.DoesNotContain(gone.HostInterface + "@", routes.StandardOutput, StringComparison.Ordinal);
            var toGone = await sandbox.Client.HttpGetAsync(gone.IP, 8080, "/cgi-bin/who", ShortTimeout);
            var toKept = await sandbox.Client.HttpGetAsync(kept.IP, 8080, "/cgi-bin/who", ProbeTimeout);
            Assert.True(toGone.Outcome == ProbeOutcome.TimedOut, toGone.ToString());
            Assert.Equal("pod=kept src=203.0.113.10", toKept.Body);
        }
        finally
        {
            await sandbox.DisposeAsync();
        }
    }

    [Fact(Timeout = 20_000)]
    public async Task DisposeAsync_AfterUse_RemovesNamespacesProcessesAndDirectories()
    {
        var sandbox = await ClusterSandbox.CreateAsync();
        Traces traces;
        try
        {
            var pod = await sandbox.AddPodAsync("only");
            var result = await sandbox.Client.HttpGetAsync(pod.IP, 8080, "/cgi-bin/who", ProbeTimeout);
            Assert.True(result.IsAnswered, result.ToString());
            traces = Traces.Of(sandbox);
            Assert.Equal(3, traces.Namespaces.Length);
            Assert.Equal(2, traces.Pids.Length);
        }
        finally
        {
            await sandbox.DisposeAsync();
        }

        await AssertNothingLeftAsync(sandbox.Prefix, traces);
    }

    [Fact(Timeout = 20_000)]
    public async Task DisposeAsync_AfterAddPodFailedHalfway_LeavesNothing()
    {
        // The pod's namespace, veth, routes and document root exist by the time the (missing) server binary fails.
        var sandbox = await ClusterSandbox.CreateAsync(new ClusterSandboxOptions { BusyboxPath = "/nonexistent/busybox" });
        try
        {
            var thrown = await Assert.ThrowsAsync<SandboxException>(() => sandbox.AddPodAsync("broken"));
            await Assert.ThrowsAsync<ArgumentException>(() => sandbox.AddPodAsync("Bad_Name"));

            Assert.Contains("broken", thrown.Message, StringComparison.Ordinal);
            Assert.Empty(sandbox.Pods);
            Assert.DoesNotContain($"{sandbox.Prefix}-pod-broken", await ListNamespacesAsync());
        }
        finally
        {
            await sandbox.DisposeAsync();
        }

        await AssertNothingLeftAsync(sandbox.Prefix, Traces.Empty);
    }

    [Fact(Timeout = 20_000)]
    public async Task SweepAsync_AbandonedSandbox_DeletesItsNamespacesAndProcesses()
    {
        var sandbox = await ClusterSandbox.CreateAsync(new ClusterSandboxOptions { CleanupOnExitSignals = false });
        var traces = Traces.Empty;
        try
        {
            await sandbox.AddPodAsync("orphan");
            traces = Traces.Of(sandbox);

            // As if the owner had crashed: sweep by prefix without disposing.
            await ClusterSandbox.SweepAsync(sandbox.Prefix);

            await AssertNothingLeftAsync(sandbox.Prefix, traces);
        }
        finally
        {
            await sandbox.DisposeAsync();
        }

        await AssertNothingLeftAsync(sandbox.Prefix, traces);
    }

    [Fact]
    public void AddRemoteNodeAsync_FirstRemoteNode_GetsDocumentedAddresses()
    {
        var nodeB = fixture.NodeB;

        Assert.Equal($"{Sandbox.Prefix}-node-b", nodeB.Namespace.Name);
        Assert.Equal(("192.0.2.2", "2001:db8:1::2", "vnode0"), (nodeB.IP, nodeB.IPv6, nodeB.HostInterface));
        Assert.Equal(("10.244.2.0/24", "fd00:10:244:2::/64"), (nodeB.PodCidr, nodeB.PodCidrV6));
        Assert.Equal(("10.244.2.2", "fd00:10:244:2::2", "node-b"), (fixture.Far0.IP, fixture.Far0.IPv6, fixture.Far0.NodeName));
        Assert.Equal("node-a", Sandbox.NodeName);
        Assert.Equal("node-a", fixture.Web0.NodeName);
        Assert.Equal([fixture.Far0], nodeB.Pods);
        Assert.Same(fixture.Far0, Sandbox.Pods["far-0"]);
    }

    [Fact(Timeout = 20_000)]
    public async Task HttpGetAsync_ClientToRemotePod_AnswersWithClientSource()
    {
        var v4 = await Sandbox.Client.HttpGetAsync(fixture.Far0.IP, 8080, "/cgi-bin/who", ProbeTimeout);
        var v6 = await Sandbox.Client.HttpGetAsync(fixture.Far0.IPv6, 8080, "/cgi-bin/who", ProbeTimeout);
        var udp = await Sandbox.Client.UdpRequestAsync(fixture.Far0.IP, 8080, "hello", ProbeTimeout);

        Assert.True(v4.IsAnswered, v4.ToString());
        Assert.Equal("pod=far-0 src=203.0.113.10", v4.Body);
        Assert.True(v6.IsAnswered, v6.ToString());
        Assert.Equal($"pod=far-0 src={Sandbox.ClientIpv6}", v6.Body);
        Assert.True(udp.IsAnswered, udp.ToString());
        Assert.Equal("pod=far-0 src=203.0.113.10", udp.Text);
    }

    [Fact(Timeout = 20_000)]
    public async Task HttpGetAsync_LocalPodToRemotePod_KeepsPodSource()
    {
        var v4 = await fixture.Web0.Namespace.HttpGetAsync(fixture.Far0.IP, 8080, "/cgi-bin/who", ProbeTimeout);
        var v6 = await fixture.Web0.Namespace.HttpGetAsync(fixture.Far0.IPv6, 8080, "/cgi-bin/who", ProbeTimeout);

        Assert.Equal($"pod=far-0 src={fixture.Web0.IP}", v4.Body);
        Assert.Equal($"pod=far-0 src={fixture.Web0.IPv6}", v6.Body);
    }

    [Fact(Timeout = 20_000)]
    public async Task HttpGetAsync_RemotePodToLocalPod_KeepsPodSource()
    {
        var v4 = await fixture.Far0.Namespace.HttpGetAsync(fixture.Web1.IP, 9090, "/cgi-bin/who", ProbeTimeout);
        var v6 = await fixture.Far0.Namespace.HttpGetAsync(fixture.Web1.IPv6, 9090, "/cgi-bin/who", ProbeTimeout);

        Assert.Equal($"pod=web-1 src={fixture.Far0.IP}", v4.Body);
        Assert.Equal($"pod=web-1 src={fixture.Far0.IPv6}", v6.Body);
    }

    [Fact(Timeout = 20_000)]
    public async Task HttpGetAsync_RemotePodAddressNobodyHas_ReturnsTimedOutWithoutLooping()
    {
        // The remote node blackholes unassigned addresses of its pod CIDR instead of bouncing them back to the node.
        var result = await Sandbox.Client.HttpGetAsync("10.244.2.250", 80, "/", ShortTimeout);
        var v4 = await fixture.NodeB.Namespace.CheckedExecAsync("ip", "route", "show", "exact", fixture.NodeB.PodCidr);
        var v6 = await fixture.NodeB.Namespace.CheckedExecAsync("ip", "-6", "route", "show", "exact", fixture.NodeB.PodCidrV6);

        Assert.True(result.Outcome == ProbeOutcome.TimedOut, result.ToString());
        Assert.StartsWith("blackhole 10.244.2.0/24", v4.StandardOutput.Trim(), StringComparison.Ordinal);
        Assert.StartsWith("blackhole fd00:10:244:2::/64", v6.StandardOutput.Trim(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("node")]
    [InlineData("client")]
    [InlineData("pod-web-0")]
    [InlineData("ext-x")]
    [InlineData("node-a")]
    [InlineData("node-b")]
    [InlineData("Node_B")]
    public async Task AddRemoteNodeAsync_NameCollidesOrIsInvalid_ThrowsArgumentException(string name)
    {
        await Assert.ThrowsAsync<ArgumentException>(() => Sandbox.AddRemoteNodeAsync(name));

        Assert.Single(Sandbox.RemoteNodes);
    }

    [Fact(Timeout = 20_000)]
    public async Task DisposeAsync_WithRemoteNodeAndPods_RemovesEverything()
    {
        var sandbox = await ClusterSandbox.CreateAsync(new ClusterSandboxOptions { NodeName = "worker-1" });
        Traces traces;
        try
        {
            var remote = await sandbox.AddRemoteNodeAsync("worker-2");
            var local = await sandbox.AddPodAsync("near");
            var gone = await sandbox.AddPodAsync("gone", [8080], remote);
            var kept = await remote.AddPodAsync("kept");
            Assert.Equal(("worker-1", "worker-2", "10.244.2.3"), (local.NodeName, kept.NodeName, kept.IP));

            // Removing a remote pod deletes its veth in the remote node (not in the node).
            await sandbox.RemovePodAsync("gone");
            var links = await remote.Namespace.CheckedExecAsync("ip", "-o", "link", "show");
            Assert.DoesNotContain(gone.HostInterface + "@", links.StandardOutput, StringComparison.Ordinal);
            Assert.Contains(kept.HostInterface + "@", links.StandardOutput, StringComparison.Ordinal);
            Assert.Equal("pod=kept src=203.0.113.10", (await sandbox.Client.HttpGetAsync(kept.IP, 8080, "/cgi-bin/who", ProbeTimeout)).Body);

            traces = Traces.Of(sandbox);
            Assert.Equal(5, traces.Namespaces.Length);
            Assert.Contains($"{sandbox.Prefix}-worker-2", await ListNamespacesAsync());
        }
        finally
        {
            await sandbox.DisposeAsync();
        }

        Assert.Empty(sandbox.RemoteNodes);
        await AssertNothingLeftAsync(sandbox.Prefix, traces);
    }

    [Fact(Timeout = 20_000)]
    public async Task AddRemoteNodeAsync_LinkFailsHalfway_RollsBackAndCanBeRetried()
    {
        var sandbox = await ClusterSandbox.CreateAsync();
        try
        {
            // Occupy the node-side interface name of the first remote node with a veth to the client (both ours), so
            // wiring fails after the remote node's namespace was created and configured.
            await sandbox.Node.CheckedExecAsync("ip", "link", "add", "vnode0", "type", "veth", "peer", "name", "blocker", "netns", sandbox.Client.Name);

            await Assert.ThrowsAsync<SandboxCommandException>(() => sandbox.AddRemoteNodeAsync("node-b"));

            Assert.Empty(sandbox.RemoteNodes);
            Assert.DoesNotContain($"{sandbox.Prefix}-node-b", await ListNamespacesAsync());
            var retried = await sandbox.AddRemoteNodeAsync("node-b");
            var pod = await retried.AddPodAsync("far");
            Assert.Equal(("192.0.2.2", "vnode0"), (retried.IP, retried.HostInterface));
            Assert.Equal("pod=far src=203.0.113.10", (await sandbox.Client.HttpGetAsync(pod.IP, 8080, "/cgi-bin/who", ProbeTimeout)).Body);
        }
        finally
        {
            await sandbox.DisposeAsync();
        }

        await AssertNothingLeftAsync(sandbox.Prefix, Traces.Empty);
    }

    [Fact(Timeout = 20_000)]
    public async Task AddPodAsync_OnRemoteNodeFailsHalfway_LeavesNothing()
    {
        var sandbox = await ClusterSandbox.CreateAsync(new ClusterSandboxOptions { BusyboxPath = "/nonexistent/busybox" });
        try
        {
            var remote = await sandbox.AddRemoteNodeAsync("node-b");

            await Assert.ThrowsAsync<SandboxException>(() => remote.AddPodAsync("broken"));

            Assert.Empty(sandbox.Pods);
            Assert.DoesNotContain($"{sandbox.Prefix}-pod-broken", await ListNamespacesAsync());
            var links = await remote.Namespace.CheckedExecAsync("ip", "-o", "link", "show");
            Assert.DoesNotContain("vpod0@", links.StandardOutput, StringComparison.Ordinal);
        }
        finally
        {
            await sandbox.DisposeAsync();
        }

        await AssertNothingLeftAsync(sandbox.Prefix, Traces.Empty);
    }

    [Theory(Timeout = 20_000)]
    [InlineData("pp")]
    [InlineData("pp1234")]
    [InlineData("ppABCDE")]
    [InlineData("xx12345")]
    [InlineData("pp12345-node")]
    public async Task SweepAsync_NotAWholeRunPrefix_ThrowsArgumentException(string prefix)
    {
        await Assert.ThrowsAsync<ArgumentException>(() => ClusterSandbox.SweepAsync(prefix));
    }

    private static async Task AssertNothingLeftAsync(string prefix, Traces traces)
    {
        var namespaces = await ListNamespacesAsync();
        Assert.DoesNotContain(namespaces, n => n.StartsWith(prefix + "-", StringComparison.Ordinal));
        foreach (var pid in traces.Pids)
        {
            Assert.False(IsLiveBusybox(pid), $"process {pid} still runs");
        }

        foreach (var directory in traces.Directories)
        {
            Assert.False(Directory.Exists(directory), $"{directory} still exists");
        }

        Assert.Empty(Directory.EnumerateDirectories(Path.GetTempPath(), prefix + "-*"));
    }

    /// <summary><c>ip netns list</c>, names only.</summary>
    private static async Task<string[]> ListNamespacesAsync()
    {
        var startInfo = new ProcessStartInfo("ip", "netns list") { RedirectStandardOutput = true, UseShellExecute = false };
        using var process = Process.Start(startInfo)!;
        var output = await process.StandardOutput.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        await process.WaitForExitAsync(cts.Token);
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(line => line.Split(' ')[0]).ToArray();
    }

    /// <summary>A killed process may linger as a zombie until its parent reaps it; that counts as gone.</summary>
    private static bool IsLiveBusybox(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat.Contains("(busybox)", StringComparison.Ordinal) && stat[(stat.LastIndexOf(')') + 2)..].StartsWith('Z') is false;
        }
        catch (IOException)
        {
            return false;
        }
    }

    private static string? ReadComm(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/comm").Trim();
        }
        catch (IOException)
        {
            return null;
        }
    }

    private static async Task WaitUntilAsync(Func<bool> condition, TimeSpan limit)
    {
        var stopwatch = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(stopwatch.Elapsed < limit, $"condition not met within {limit}");
            await Task.Delay(10);
        }
    }

    private sealed record Traces(string[] Namespaces, int[] Pids, string[] Directories)
    {
        public static Traces Empty { get; } = new([], [], []);

        public static Traces Of(ClusterSandbox sandbox)
        {
            var pods = sandbox.Pods.Values.ToArray();
            var namespaces = new[] { sandbox.Node.Name }
                .Concat(sandbox.ExternalClients.Select(c => c.Namespace.Name))
                .Concat(sandbox.RemoteNodes.Select(n => n.Namespace.Name))
                .Concat(pods.Select(p => p.Namespace.Name))
                .ToArray();
            return new Traces(namespaces, pods.SelectMany(p => p.Servers).Select(s => s.Pid).ToArray(), pods.Select(p => p.ContentDirectory).ToArray());
        }
    }
}
