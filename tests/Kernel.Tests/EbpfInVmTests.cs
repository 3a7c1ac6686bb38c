using ProxyPlanes.Kernel.Tests.Conformance;
using ProxyPlanes.VmLane;
using Xunit.Abstractions;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// --mode=ebpf on the VM lane's kernel (Debian's stock 6.1 under qemu), which has neither tcx (6.6) nor the
/// bpf_sock_destroy kfunc (6.5): the same binaries as on the development kernel must attach the tc programs over
/// clsact + cls_bpf there, and destroy sockets through the sock_diag fallback (SOCK_DESTROY), saying so in one line. These run the eBPF
/// program and loader tests and conformance scenarios inside the guest, from the test binaries this build made,
/// and fail here if any fails there or if the guest did not take the 6.1 paths.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class EbpfInVmTests(ITestOutputHelper output)
{
    /// <summary>
    /// The conformance scenarios that exercise both halves of the mode, not the whole suite (measured under TCG: see
    /// vm/README.md; the whole ebpf suite would add well over the lane's 15-minute share of the CI budget): the tc
    /// programs (off-node clients: a cluster IP, refusal through the nftables reject mark, a node port, load-balancer
    /// source ranges in the LPM trie, UDP through a node port) and the socket hooks (the node's and a pod's
    /// connects, the bpf_set_retval refusal, UDP's sendmsg/recvmsg, IPv6), and the UDP stale-flow cleanup, which on
    /// this kernel destroys sockets through sock_diag.
    /// </summary>
    public static readonly string[] Scenarios =
    [
        "clusterip-spreads-over-every-endpoint",
        "no-endpoints-is-refused-at-once",
        "load-balancer-source-ranges-allow-and-drop",
        "udp-service-reaches-endpoints",
        "udp-stale-flows-are-cleared-when-an-endpoint-goes",
        "ipv6-service-reaches-ipv6-endpoints",
    ];

    /// <summary>
    /// The test classes of tests/Backends.Ebpf.Tests run in the guest. Left out, to keep the lane's share of the CI
    /// budget (all of them but the planner's took 13 min under TCG with the host at load 35-49, SocketHookTests 4.4 min
    /// of it): SocketHookTests (the conformance scenarios above drive the same hooks from the node and a pod),
    /// EbpfExplainerTests (reads maps, nothing kernel-specific), StaleUdpFlowTests (the udp-stale-flows scenario above)
    /// and EbpfPlannerTests (no kernel). All of them passed on 6.1 by hand (vm/README.md).
    /// </summary>
    public static readonly string[] ProgramAndLoaderTests =
    [
        "MapLayoutTests", "BpfObjectTests", "TcProgramTests", "TcProgram6Tests", "TcDataPathTests", "ClsactCleanupTests",
        "EbpfBackendTests", "SocketDestroyTests",
    ];

    [OutsideTheVmFact]
    public async Task ConformanceScenariosOfTheTcProgramsAndSocketHooks_Ebpf_PassInTheVmLane_OverClsact()
    {
        Assert.All(Scenarios, name => Assert.Contains(ConformanceScenarios.All, s => s.Name == name));
        var results = Directory.CreateTempSubdirectory("proxyplanes-vm-ebpf-conformance-");
        try
        {
            var scenarios = string.Join('|', Scenarios.Select(name => $"DisplayName~\"{name}\""));
            var run = await VmLane.VmLane.RunDotnetTestAsync(
                typeof(EbpfInVmTests).Assembly.Location, $"FullyQualifiedName~ConformanceTests&DisplayName~\"ebpf\"&({scenarios})",
                results.FullName, TimeSpan.FromMinutes(30));
            output.WriteLine($"VM run: {run.Run.Elapsed.TotalSeconds:F0} s, {run.Passed} passed");

            Assert.True(run.Succeeded && run.Failed == 0 && run.Passed == Scenarios.Length, run.ToString());
            // Each daemon (ConformanceTests prints its "eBPF:" lines) attached over clsact, never tcx, and said once
            // that it destroys sockets through the sock_diag fallback here.
            Assert.All(run.Tests, test =>
            {
                var daemon = test.Output.Split('\n').Where(line => line.Contains("daemon: ", StringComparison.Ordinal)).ToList();
                Assert.Contains(daemon, line => line.Contains("tc programs on", StringComparison.Ordinal) && line.Contains("(clsact)", StringComparison.Ordinal));
                Assert.DoesNotContain(daemon, line => line.Contains("(tcx)", StringComparison.Ordinal));
                Assert.Single(daemon, line => line.Contains("sockets are destroyed through sock_diag SOCK_DESTROY on this kernel", StringComparison.Ordinal));
                Assert.DoesNotContain(daemon, line => line.Contains("not destroyed on this kernel", StringComparison.Ordinal));
            });
        }
        finally
        {
            results.Delete(recursive: true);
        }
    }

    /// <summary>
    /// The classes of tests/Backends.Ebpf.Tests where the kernel's version matters (<see cref="ProgramAndLoaderTests"/>):
    /// the programs through the 6.1 verifier and BPF_PROG_TEST_RUN, the loader, the tc programs with real packets over
    /// clsact, the clsact cleanup, the backend's node side, the socket destroyer's probe. On 6.1 the tcx-only test and
    /// the bpf_sock_destroy kernel tests skip by feature probe (the kernel's BTF); the tc data path with
    /// <c>TcAttachMode.Auto</c> must have used clsact, <c>SocketDestroyer.TryLoad</c> must have fallen back to sock_diag
    /// in one line, and the sock_diag kernel tests (real sockets destroyed) must have run and passed.
    /// </summary>
    [OutsideTheVmFact]
    public async Task EbpfProgramAndLoaderTests_PassInTheVmLane_AutoPicksClsact_SocketDestroyBySockDiag()
    {
        var dll = SiblingTestAssembly.PathOf("Backends.Ebpf.Tests");
        var results = Directory.CreateTempSubdirectory("proxyplanes-vm-ebpf-");
        try
        {
            var classes = string.Join('|', ProgramAndLoaderTests.Select(name => $"FullyQualifiedName~ProxyPlanes.Backends.Ebpf.Tests.{name}."));
            var run = await VmLane.VmLane.RunDotnetTestAsync(dll, classes, results.FullName, TimeSpan.FromMinutes(25));
            output.WriteLine($"VM run: {run.Run.Elapsed.TotalSeconds:F0} s, {run.Passed} passed, {run.NotExecuted} not executed");

            Assert.True(run.Succeeded && run.Failed == 0 && run.Passed > 0, run.ToString());
            var auto = Assert.Single(run.Tests, t => t.Name.Contains("NodePortAndExternalIp", StringComparison.Ordinal) && t.Name.Contains("Auto", StringComparison.Ordinal));
            Assert.Equal("Passed", auto.Outcome);
            Assert.Contains("tc attach Auto: Clsact, Clsact", auto.Output, StringComparison.Ordinal);
            var destroy = Assert.Single(run.Tests, t => t.Name.Contains("TryLoad_LoadsWhereTheKernelHasTheKfunc", StringComparison.Ordinal));
            Assert.Equal("Passed", destroy.Outcome);
            Assert.Contains("socket destroy: sock_diag on kernel", destroy.Output, StringComparison.Ordinal);
            var sockDiag = run.Tests.Where(t => t.Name.Contains("SockDiagFallback", StringComparison.Ordinal)).ToList();
            Assert.Equal(5, sockDiag.Count); // EndpointRemoved and DropToForward in both families, FrontendRemoved
            Assert.All(sockDiag, t => Assert.Equal("Passed", t.Outcome));
        }
        finally
        {
            results.Delete(recursive: true);
        }
    }
}
