using System.Text.RegularExpressions;
using ProxyPlanes.VmLane;
using Lane = ProxyPlanes.VmLane.VmLane;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// The VM lane: Debian's stock kernel (IPVS as modules, which this machine's kernel lacks) booted
/// under qemu TCG, running commands with the host's files. Each boot costs a few seconds.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class VmLaneTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(2);

    [Fact]
    public async Task Run_BootsTheStockKernel_AndReturnsTheCommandsExitCode()
    {
        var kernel = VmKernel.FindNewest();

        var result = await Lane.RunAsync("uname -r; cat /proc/modules | head; echo \"time scale $PROXYPLANES_TIME_SCALE\"; echo to-stderr >&2; exit 3", Timeout);

        Assert.False(result.TimedOut, result.ToString());
        Assert.Equal(3, result.ExitCode);
        var lines = result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(kernel.Release, lines[0]);
        Assert.Equal(kernel.Release, result.KernelRelease);
        Assert.NotEqual(File.ReadAllText("/proc/sys/kernel/osrelease").Trim(), lines[0]);
        Assert.Contains(lines, l => l.StartsWith("9p ", StringComparison.Ordinal)); // loaded by the initramfs, from the stock kernel's modules
        Assert.Contains("time scale 4", lines); // the lab's waits stretch by this much in the guest
        Assert.Equal("to-stderr\n", result.StandardError);
        Assert.NotNull(result.BootTime);
        Assert.False(Lane.IsQemu(result.QemuProcessId));
    }

    [Fact]
    public async Task Run_IpvsWorksInTheVm_InAFreshNetworkNamespace()
    {
        // The real server is masqueraded; IPVS refuses that ("address not unicast") while lo is down.
        const string command = """
            set -e
            ip netns add lane
            ip netns exec lane sh -ec '
              ip link set lo up
              modprobe ip_vs
              ipvsadm -A -t 10.1.2.3:80 -s rr
              ip link add pods type dummy
              ip link set pods up
              ip addr add 10.244.0.1/24 dev pods
              ipvsadm -a -t 10.1.2.3:80 -r 10.244.0.5:8080 -m
              ipvsadm -Ln'
            echo "--- root namespace"
            ipvsadm -Ln
            """;

        var result = await Lane.RunAsync(command, Timeout);

        Assert.True(result.ExitCode == 0, result.ToString());
        var (inNamespace, inRoot) = Split(result.StandardOutput, "--- root namespace");
        Assert.Matches(new Regex(@"^TCP\s+10\.1\.2\.3:80 rr\s*$", RegexOptions.Multiline), inNamespace);
        Assert.Matches(new Regex(@"^\s+-> 10\.244\.0\.5:8080\s+Masq\s+1\s", RegexOptions.Multiline), inNamespace);
        Assert.DoesNotContain("10.1.2.3", inRoot); // the virtual server lives in the namespace only
        Assert.Contains("IP Virtual Server", inRoot);
    }

    [Fact]
    public async Task Run_PastItsTimeout_KillsTheVmAndSaysSo()
    {
        var timeout = TimeSpan.FromSeconds(15);

        var result = await Lane.RunAsync("echo started; sleep 600", timeout);

        Assert.True(result.TimedOut, result.ToString());
        Assert.Null(result.ExitCode);
        Assert.Contains("started", result.StandardOutput); // the command ran: it was the command that was cut short
        Assert.InRange(result.Elapsed, timeout, timeout + TimeSpan.FromSeconds(15));
        Assert.True(result.QemuProcessId > 0);
        Assert.False(Lane.IsQemu(result.QemuProcessId), $"qemu (PID {result.QemuProcessId}) still runs");
    }

    [Fact]
    public async Task RunDotnetTest_RunsABuiltTestAssemblyInTheVm_AndBringsTheTrxBack()
    {
        // This very assembly, filtered to one test that needs no VM of its own.
        var results = Directory.CreateTempSubdirectory("vmlane-test-").FullName;
        try
        {
            var test = await Lane.RunDotnetTestAsync(
                typeof(VmLaneTests).Assembly.Location,
                $"FullyQualifiedName={typeof(VmLaneTests).FullName}.{nameof(FindNewest_WithoutAKernel_NamesThePackageToInstall)}",
                results,
                TimeSpan.FromMinutes(5));

            Assert.True(test.Succeeded, test.ToString());
            Assert.Equal(1, test.Total);
            Assert.Equal(1, test.Passed);
            Assert.True(File.Exists(test.TrxPath));
            Assert.Contains(nameof(FindNewest_WithoutAKernel_NamesThePackageToInstall), test.Run.StandardOutput);
        }
        finally
        {
            Directory.Delete(results, recursive: true);
        }
    }

    [Theory]
    [InlineData(null, 1)]
    [InlineData("", 1)]
    [InlineData("4", 4)]
    [InlineData("2.5", 2.5)]
    [InlineData("0", 1)]
    [InlineData("-3", 1)]
    [InlineData("lots", 1)]
    public void TimeBudget_ParsesTheScale_AndFallsBackToOne(string? value, double expected) =>
        Assert.Equal(expected, ProxyPlanes.Sandboxed.TimeBudget.Parse(value));

    [Fact]
    public void FindNewest_WithoutAKernel_NamesThePackageToInstall()
    {
        var e = Assert.Throws<VmLaneException>(() => VmKernel.FindNewest("/nonexistent/boot"));
        Assert.Contains("linux-image-amd64", e.Message);
    }

    [Fact]
    public async Task Run_WithoutQemu_NamesThePackageToInstall()
    {
        var options = VmLaneOptions.Default with { Qemu = "/nonexistent/emulator" };

        var e = await Assert.ThrowsAsync<VmLaneException>(() => Lane.RunAsync("true", Timeout, options));

        Assert.Contains("qemu-system-x86", e.Message);
    }

    private static (string Before, string After) Split(string text, string marker)
    {
        var at = text.IndexOf(marker, StringComparison.Ordinal);
        Assert.True(at >= 0, $"no '{marker}' in:\n{text}");
        return (text[..at], text[(at + marker.Length)..]);
    }
}
