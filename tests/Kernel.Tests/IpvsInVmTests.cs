using ProxyPlanes.Kernel.Tests.Conformance;
using ProxyPlanes.VmLane;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// IPVS needs a kernel with ip_vs, which the development kernel lacks: these run the IPVS tests and
/// the whole conformance suite with --mode=ipvs inside the VM lane (Debian's stock kernel under qemu),
/// from the test binaries this build made, and fail here if any fails there.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class IpvsInVmTests
{
    [OutsideTheVmFact]
    public async Task ConformanceSuiteAndCanaryRepair_Ipvs_PassInTheVmLane()
    {
        var results = Directory.CreateTempSubdirectory("proxyplanes-vm-conformance-");
        try
        {
            var run = await VmLane.VmLane.RunDotnetTestAsync(
                typeof(IpvsInVmTests).Assembly.Location, "(FullyQualifiedName~ConformanceTests|FullyQualifiedName~CanaryRepairTests)&DisplayName~\"ipvs\"",
                results.FullName, TimeSpan.FromMinutes(40));

            // Every conformance scenario, and the flush-from-outside repair by the IPVS canary.
            Assert.True(run.Succeeded && run.Failed == 0 && run.Passed == ConformanceScenarios.All.Count + 1, run.ToString());
        }
        finally
        {
            results.Delete(recursive: true);
        }
    }

    [OutsideTheVmFact]
    public async Task IpvsKernelTests_PassInTheVmLane()
    {
        var dll = Path.Combine(AppContext.BaseDirectory.Replace("Kernel.Tests", "Backends.Ipvs.Tests", StringComparison.Ordinal), "ProxyPlanes.Backends.Ipvs.Tests.dll");
        Assert.True(File.Exists(dll), $"{dll} is not built");
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
