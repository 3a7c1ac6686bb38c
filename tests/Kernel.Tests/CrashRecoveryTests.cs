using System.Text.RegularExpressions;
using ProxyPlanes.Sandbox;
using ProxyPlanes.Sandboxed;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// SIGKILL in the middle of a sync, then a restart: the kernel converges to the desired state with
/// nothing of the interrupted sync left behind. The middle is hit reliably with a wrapper first on
/// the daemon's PATH around the mode's kernel tool: once armed, it lets the real tool commit, then
/// says so and hangs, so the daemon is killed after the kernel took part of the change (one family,
/// one table) and before the daemon knew. The wrapper dies with it, as a container's processes do.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed partial class CrashRecoveryTests
{
    private const string WebIP = "10.96.0.10";
    private const string ApiIP = "10.96.0.20";

    [Theory]
    [InlineData("iptables", "iptables-nft-restore")]
    [InlineData("nftables", "nft")]
    public async Task SigkillMidSync_ThenRestart_KernelConvergesWithNothingHalfApplied(string mode, string tool)
    {
        await using var scenario = await ProxyScenario.CreateAsync(pods: 3);
        scenario.WriteManifest("web.yaml", ProxyScenario.Service("web", WebIP));
        scenario.WriteManifest("web-endpoints.yaml", ProxyScenario.Slice("web", scenario.PodIp(0), scenario.PodIp(1), scenario.PodIp(2)));
        var node = scenario.Sandbox.Node;
        var tools = Directory.CreateTempSubdirectory("proxyplanes-crash-");
        string[] args = mode == "iptables" ? ["--iptables-variant=nft"] : [];
        try
        {
            var armed = Path.Combine(tools.FullName, "armed");
            var committed = Path.Combine(tools.FullName, "committed");
            var wrapper = Path.Combine(tools.FullName, tool);
            // Only a write (restore, or nft -f) counts; reads pass through.
            File.WriteAllText(wrapper, $$"""
                #!/bin/sh
                case "$*" in *-f*|*--noflush*) write=1 ;; *) write= ;; esac
                {{InstalledTool.PathOf(tool)}} "$@"; code=$?
                if [ -n "$write" ] && [ -e '{{armed}}' ]; then touch '{{committed}}'; sleep 120; fi
                exit $code
                """.Replace("\r", "", StringComparison.Ordinal));
            File.SetUnixFileMode(wrapper, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            var path = new Dictionary<string, string> { ["PATH"] = $"{tools.FullName}:{Environment.GetEnvironmentVariable("PATH")}" };
            var proxy = await scenario.StartProxyAsync(args, path, mode);
            Assert.Equal(["pod-0", "pod-1", "pod-2"], (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80)).Keys.Order());

            // The change: pod-1 leaves web, a new service api appears. The first write commits, then the daemon dies.
            File.WriteAllText(armed, "");
            scenario.WriteManifest("api.yaml", ProxyScenario.Service("api", ApiIP));
            scenario.WriteManifest("api-endpoints.yaml", ProxyScenario.Slice("api", scenario.PodIp(1)));
            scenario.WriteManifest("web-endpoints.yaml", ProxyScenario.Slice("web", scenario.PodIp(0), scenario.PodIp(2)));
            await WaitForFileAsync(committed, proxy);
            await KillWithChildrenAsync(proxy);
            var killedOutput = proxy.Output;

            // Restart without the wrapper's hang: the first sync is full and reads the kernel back.
            File.Delete(armed);
            proxy = await scenario.StartProxyAsync(args, path, mode);
            Assert.Equal(["pod-0", "pod-2"], (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80)).Keys.Order());
            Assert.Equal(["pod-1"], (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, ApiIP, 80, count: 10)).Keys.Order());
            var afterRestart = await DumpAsync(node, mode);
            // Nothing of web's old endpoint (pod-1 now serves api only).
            var removed = new Regex(Regex.Escape(scenario.PodIp(1)) + "[^0-9]");
            Assert.DoesNotContain(afterRestart.Split('\n'), l => removed.IsMatch(l) && l.Contains("web", StringComparison.Ordinal));
            Assert.Contains(afterRestart.Split('\n'), l => removed.IsMatch(l)); // positive control: api's endpoint is there

            // Converged, not just working: a proxy that never crashed holds the same rules. A second
            // restart rebuilds from scratch what is wanted; the kernel must not change.
            await proxy.Process.KillAsync();
            await scenario.StartProxyAsync(args, path, mode);
            Assert.Equal(afterRestart, await DumpAsync(node, mode));
            Assert.Contains("Synced full", killedOutput + scenario.Proxy!.Output);
        }
        finally
        {
            tools.Delete(recursive: true);
        }
    }

    /// <summary>Waits (bounded) until the wrapper says the kernel committed part of the change.</summary>
    private static async Task WaitForFileAsync(string file, ProxyProcess proxy)
    {
        var deadline = DateTime.UtcNow + TimeBudget.For(TimeSpan.FromSeconds(30));
        while (!File.Exists(file))
        {
            if (DateTime.UtcNow > deadline) Assert.Fail($"no write reached the kernel tool within the budget:\n{proxy.Output}");
            if (proxy.Process.HasExited) Assert.Fail($"proxyplanes exited:\n{proxy.Output}");
            await Task.Delay(20);
        }
    }

    /// <summary>SIGKILL to the daemon's children (the hanging wrapper, started by it), then to the daemon.</summary>
    private static async Task KillWithChildrenAsync(ProxyProcess proxy)
    {
        var pid = proxy.Process.Pid;
        var children = Directory.EnumerateDirectories($"/proc/{pid}/task")
            .SelectMany(task => File.ReadAllText(Path.Combine(task, "children")).Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Select(int.Parse)
            .ToList();
        Assert.NotEmpty(children); // the wrapper is hanging inside the sync
        await proxy.Process.KillAsync();
        foreach (var child in children) Signals.Send(child, 9);
    }

    /// <summary>What the mode holds in the kernel, without counters or anything that changes by itself.</summary>
    private static async Task<string> DumpAsync(NetworkNamespace node, string mode)
    {
        if (mode == "iptables")
        {
            return await DaemonTests.SaveAsync(node, "nft") + "\n" + await DaemonTests.SaveAsync(node, "nft", "ip6tables");
        }
        var ruleset = (await node.CheckedExecAsync("nft", "list", "ruleset")).StandardOutput;
        return Handles().Replace(ruleset, "");
    }


    [GeneratedRegex(@" # handle \d+")]
    private static partial Regex Handles();
}
