using System.Diagnostics;
using ProxyPlanes.Backends.Ebpf;
using ProxyPlanes.Sandbox;
using ProxyPlanes.Sandboxed;
using Xunit.Abstractions;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// The real daemon in --mode=ebpf, always with a bpffs and a cgroup the test made (never the node
/// defaults, which would hook the host's cgroup root). The daemon runs through <c>ip netns exec</c>,
/// which hides /sys/fs/cgroup: it gets the test cgroup through a second cgroup2 mount in /tmp. Clients
/// run in that cgroup and in the node's network namespace.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class EbpfDaemonTests(ITestOutputHelper output)
{
    private const string Vip = "10.96.0.10";

    [Fact]
    public async Task Run_EbpfMode_SpreadsKeepsTrafficAfterAKillAndCleanupRemovesEverything()
    {
        using var place = new EbpfPlace("daemon-" + Guid.NewGuid().ToString("N")[..6]);
        var cgroup = place.Cgroup;
        try
        {
            await using var scenario = await ProxyScenario.CreateAsync(pods: 2);
            scenario.WriteManifest("web.yaml", ProxyScenario.Service("web", Vip) + "---\n" + ProxyScenario.Slice("web", scenario.PodIp(0), scenario.PodIp(1)));
            var flags = place.Flags;

            var proxy = await scenario.StartProxyAsync(flags, mode: "ebpf");
            Assert.Contains("does not render yet: SCTP", proxy.Output);
            Assert.Contains("maps created", proxy.Output);
            Assert.Equal(["pod-0", "pod-1"], Spread(scenario, cgroup, 16));
            // An off-node client (outside the cgroup): its packets meet the tc programs on the node's interfaces.
            Assert.Equal(["pod-0", "pod-1"], (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, Vip, 80, count: 20)).Keys.Order());
            Assert.True((await scenario.Sandbox.Node.ExecAsync("nft", "list", "table", "inet", EbpfNftables.Table)).Succeeded);

            // SIGKILL: no cleanup runs; the pinned links (socket hooks and tcx) and maps keep serving.
            await proxy.DisposeAsync();
            Assert.Equal(["pod-0", "pod-1"], Spread(scenario, cgroup, 16));
            Assert.Equal(["pod-0", "pod-1"], (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, Vip, 80, count: 20)).Keys.Order());

            proxy = await scenario.StartProxyAsync(flags, mode: "ebpf");
            Assert.Contains("maps reused", proxy.Output);
            Assert.Equal(["pod-0", "pod-1"], Spread(scenario, cgroup, 16));
            await proxy.DisposeAsync();

            var (file, prefix) = ProxyProcess.Executable(ProxyProcess.Daemon);
            var cleanup = await scenario.Sandbox.Node.ExecAsync([file, .. prefix, "cleanup", "--mode=ebpf", $"--bpf-fs={place.BpfFs}"], TimeSpan.FromSeconds(60));
            output.WriteLine(cleanup.StandardOutput + cleanup.StandardError);
            Assert.True(cleanup.Succeeded, cleanup.StandardError);
            Assert.False(Directory.Exists(Path.Combine(place.BpfFs, EbpfLocation.PinFolder)));
            Assert.All(BpfCgroup.AttachTypes, type => Assert.Equal(0, BpfCgroup.AttachedPrograms(cgroup.Path, type)));
            Assert.False((await scenario.Sandbox.Node.ExecAsync("nft", "list", "table", "inet", EbpfNftables.Table)).Succeeded);
            Assert.Empty(Spread(scenario, cgroup, 1, expectAnswers: false));
        }
        finally
        {
            EbpfKernel.Remove(place.BpfFs, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        }
    }

    /// <summary>The pods that answered <paramref name="requests"/> HTTP requests to the VIP from a client in the test cgroup and the node's namespace.</summary>
    private static string[] Spread(ProxyScenario scenario, SandboxCgroup cgroup, int requests, bool expectAnswers = true)
    {
        const string script = """
            echo $$ > "$1/cgroup.procs" || exit 3
            exec nsenter --net="$2" bash -c 'for i in $(seq 1 "$2"); do curl -s -m 3 "http://$1/cgi-bin/who"; echo; done' client "$3" "$4"
            """;
        var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in new[] { "-c", script, "wrapper", cgroup.Path, scenario.Sandbox.Node.Path, Vip, requests.ToString(System.Globalization.CultureInfo.InvariantCulture) })
            start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        var text = process.StandardOutput.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail("the client did not finish in 60 s");
        }
        var answers = text.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.Contains("pod=", StringComparison.Ordinal)).ToArray();
        if (expectAnswers) Assert.True(answers.Length == requests, $"{answers.Length} of {requests} requests answered: {text.Result}");
        return [.. answers.Select(a => ProxyScenario.Who(a).Pod).Distinct().Order(StringComparer.Ordinal)];
    }
}
