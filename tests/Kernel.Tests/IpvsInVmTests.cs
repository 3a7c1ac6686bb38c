using ProxyPlanes.Kernel.Tests.Conformance;
using ProxyPlanes.Sandboxed;
using ProxyPlanes.VmLane;
using Xunit.Abstractions;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// IPVS needs a kernel with ip_vs, which the development kernel lacks: these run the IPVS tests and
/// the whole conformance suite with --mode=ipvs inside the VM lane (Debian's stock kernel under qemu),
/// from the test binaries this build made, and fail here if any fails there.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class IpvsInVmTests(ITestOutputHelper output)
{
    [OutsideTheVmFact]
    public async Task ConformanceSuiteAndCanaryRepair_Ipvs_PassInTheVmLane()
    {
        var results = Directory.CreateTempSubdirectory("proxyplanes-vm-conformance-");
        var daemon = Directory.CreateTempSubdirectory("proxyplanes-vm-daemon-");
        try
        {
            // Opt-in (PROXYPLANES_VM_READYTORUN=1): the daemon ReadyToRun, since under emulation the JIT is most
            // of a daemon's start and first sync. Not the default yet: the one full run with it met a guest
            // soft lockup (CPU stuck in a .NET thread for 10+ minutes, `ip` blocked behind it) whose cause is
            // not known; the JIT build has passed the lane in CI. See vm/README.md.
            var (published, how) = Environment.GetEnvironmentVariable("PROXYPLANES_VM_READYTORUN") == "1"
                ? await PublishDaemonReadyToRunAsync(daemon.FullName)
                : (false, "JIT build next to the tests (PROXYPLANES_VM_READYTORUN=1 publishes it ReadyToRun)");
            output.WriteLine($"daemon in the VM: {how}");
            var environment = new Dictionary<string, string>();
            if (published) environment[ProxyProcess.DaemonDirectoryVariable] = Path.Combine(daemon.FullName, "out");

            var run = await VmLane.VmLane.RunDotnetTestAsync(
                typeof(IpvsInVmTests).Assembly.Location, "(FullyQualifiedName~ConformanceTests|FullyQualifiedName~CanaryRepairTests|FullyQualifiedName~CrashRecoveryTests)&DisplayName~\"ipvs\"",
                results.FullName, TimeSpan.FromMinutes(40), new VmLaneOptions { Environment = environment });

            // Every conformance scenario, the flush-from-outside repair by the IPVS canary, and SIGKILL mid-sync.
            Assert.True(run.Succeeded && run.Failed == 0 && run.Passed == ConformanceScenarios.All.Count + 2, $"daemon: {how}\n{run}");
        }
        finally
        {
            results.Delete(recursive: true);
            daemon.Delete(recursive: true);
        }
    }

    /// <summary>
    /// Publishes src/ProxyPlanes ReadyToRun into FOLDER/out (intermediates in FOLDER/artifacts, so the
    /// source tree's obj/ and bin/ are left alone). Where that cannot be done (no source tree next to
    /// these binaries, or the publish fails), the VM runs the daemon built next to the tests, and the
    /// reason is reported: slower, still correct.
    /// </summary>
    private static async Task<(bool Published, string How)> PublishDaemonReadyToRunAsync(string folder)
    {
        var root = new DirectoryInfo(AppContext.BaseDirectory);
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "ProxyPlanes.sln"))) root = root.Parent;
        if (root is null) return (false, $"JIT build next to the tests (no ProxyPlanes.sln above {AppContext.BaseDirectory} to publish from)");
        var stopwatch = System.Diagnostics.Stopwatch.StartNew();
        var result = await NodeTools.ExternalCommand.RunAsync(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet",
        [
            "publish", Path.Combine(root.FullName, "src", "ProxyPlanes", "ProxyPlanes.csproj"), "-c", "Release", "-r", "linux-x64", "--self-contained", "false",
            "-p:PublishReadyToRun=true", "--artifacts-path", Path.Combine(folder, "artifacts"), "-o", Path.Combine(folder, "out"), "--nologo", "-v", "quiet",
        ], standardInput: null, TimeSpan.FromMinutes(10));
        return result.Succeeded && File.Exists(Path.Combine(folder, "out", ProxyProcess.Daemon))
            ? (true, $"published ReadyToRun in {stopwatch.Elapsed.TotalSeconds:F0} s")
            : (false, $"JIT build next to the tests (dotnet publish -p:PublishReadyToRun=true exited with {result.ExitCode}: {NodeTools.ExternalCommand.FirstLines(result.StandardOutput + result.StandardError, 5)})");
    }

    [OutsideTheVmFact]
    public async Task IpvsKernelTests_PassInTheVmLane()
    {
        var dll = SiblingTestAssembly.PathOf("Backends.Ipvs.Tests");
        var results = Directory.CreateTempSubdirectory("proxyplanes-vm-ipvs-");
        try
        {
            var run = await VmLane.VmLane.RunDotnetTestAsync(dll, "Kernel=ipvs", results.FullName, TimeSpan.FromMinutes(20),
                new VmLaneOptions { Environment = new Dictionary<string, string> { ["PROXYPLANES_IPVS_TESTS"] = "1" } });

            Assert.True(run.Succeeded && run.Failed == 0 && run.Passed > 0, run.ToString());
        }
        finally
        {
            results.Delete(recursive: true);
        }
    }
}

/// <summary>A fact that starts the VM lane: skipped, saying so, inside the VM (there the IPVS cases run themselves).</summary>
public sealed class OutsideTheVmFactAttribute : FactAttribute
{
    public OutsideTheVmFactAttribute()
    {
        if (VmLane.VmLane.IsInsideVm) Skip = "runs the VM lane; this already is the VM, where the IPVS cases run themselves";
    }
}
