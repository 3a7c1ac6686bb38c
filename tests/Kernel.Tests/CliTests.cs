using ProxyPlanes.Sandboxed;
using static ProxyPlanes.Kernel.Tests.ProxyCli;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>Invalid flags and input give one line naming the problem and a non-zero exit.</summary>
[Collection(KernelCollection.Name)]
public sealed class CliTests
{
    public static TheoryData<string[], string> BadFlags => new()
    {
        { ["--mode=bogus", "--manifests=/"], "--mode: 'bogus' is not a mode" },
        { ["--manifests=/", "--bpf-fs=bpf"], "--bpf-fs: 'bpf' is not an absolute path" },
        { ["--manifests=/", "--bpf-cgroup=/nonexistent/cgroup"], "--bpf-cgroup: '/nonexistent/cgroup' does not exist" },
        { ["--manifests=/", "--bpf-cgroup=/tmp"], "--bpf-cgroup: '/tmp' is not a cgroup v2 directory" },
        { ["--mode=ipvs", "--manifests=/"], "--mode=ipvs: this kernel has no IPVS" },
        { ["--manifests=/", "--ipvs-scheduler=fastest"], "--ipvs-scheduler: 'fastest' is not an IPVS scheduler" },
        { ["--manifests=/nonexistent/path"], "--manifests: '/nonexistent/path' does not exist" },
        { ["--manifests=/", "--kubeconfig=/x"], "--manifests and --kubeconfig name two sources: give one" },
        { ["--manifests=/", "--min-sync-period=abc"], "--min-sync-period: 'abc' is not a duration" },
        { ["--manifests=/", "--min-sync-period=1m", "--sync-period=30s"], "--min-sync-period (60s) must not exceed --sync-period (30s)" },
        { ["--manifests=/", "--cluster-cidr=10.244.0.0"], "--cluster-cidr: '10.244.0.0' is not a CIDR" },
        { ["--manifests=/", "--nodeport-addresses=primary,10.0.0.0/8"], "--nodeport-addresses: 'primary' (the node's primary IPs) cannot be combined with other values" },
        { ["--manifests=/", "--metrics-bind-address=nowhere"], "--metrics-bind-address: 'nowhere' is not an address:port" },
        { ["--manifests=/", "--iptables-variant=x"], "--iptables-variant: 'x' is not auto, nft or legacy" },
        { ["--no-such-flag"], "--no-such-flag" },
        { ["--manifests=/", "--detect-local-mode=bogus"], "--detect-local-mode: 'bogus' is not ClusterCIDR, NodeCIDR, InterfaceNamePrefix or BridgeInterface" },
        { ["--manifests=/", "--detect-local-mode=InterfaceNamePrefix"], "needs --pod-interface-name-prefix" },
        { ["--manifests=/", "--sync-period=48h"], "--sync-period must be greater than 0 and at most 24h" },
    };

    [Theory]
    [MemberData(nameof(BadFlags))]
    public async Task Run_InvalidFlag_PrintsOneLineNamingItAndFails(string[] args, string expected)
    {
        var result = await RunInNamespaceAsync(["run", .. args]);

        Assert.NotEqual(0, result.ExitCode);
        var lines = result.StandardError.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("proxyplanes: ", lines[0]);
        Assert.Contains(expected, lines[0]);
    }

    [Fact]
    public async Task Demo_IpvsOnAKernelWithoutIpvs_SaysSoInOneLine()
    {
        var result = await RunInNamespaceAsync(["demo", "--mode=ipvs"], ProxyProcess.Lab);

        Assert.Equal(2, result.ExitCode);
        Assert.Equal("proxyplanes-lab: --mode=ipvs: this kernel has no IPVS (the ip_vs module cannot be loaded); use iptables or nftables, or the VM lane (vm/README.md)", result.StandardError.Trim());
    }

    [Theory]
    [InlineData("--mode=bogus", "proxyplanes-lab: --mode: 'bogus' is not a mode; use one of iptables, nftables, ipvs, ebpf")]
    public async Task Demo_ModeItCannotRun_SaysSoInOneLine(string flag, string expected)
    {
        var result = await RunInNamespaceAsync(["demo", flag], ProxyProcess.Lab);

        Assert.Equal(2, result.ExitCode);
        Assert.Equal(expected, result.StandardError.Trim());
    }

    [Theory]
    [InlineData("--mode=bogus", "proxyplanes: --mode: 'bogus' is not a mode; use one of iptables, nftables, ipvs, ebpf")]
    public async Task Cleanup_ModeItCannotRun_SaysSoInOneLine(string flag, string expected)
    {
        var result = await RunInNamespaceAsync(["cleanup", flag]);

        Assert.Equal(2, result.ExitCode);
        Assert.Equal(expected, result.StandardError.Trim());
    }

    [Theory]
    [InlineData("demo")]
    [InlineData("bench")]
    public async Task Daemon_LabCommand_IsNotOneOfItsCommands(string command)
    {
        var result = await RunInNamespaceAsync([command]);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains($"'{command}'", result.StandardError);

        var lab = await RunInNamespaceAsync([command, "--help"], ProxyProcess.Lab);
        Assert.True(lab.ExitCode == 0, lab.StandardError); // a positive control: the lab has it
    }

    [Fact]
    public async Task Run_NoManifestsOutsideACluster_SaysHowToReachTheApi()
    {
        var result = await RunInNamespaceAsync(["run"]);

        Assert.Equal(1, result.ExitCode);
        Assert.Contains("KUBERNETES_SERVICE_HOST", result.StandardError);
        Assert.Contains("--kubeconfig", result.StandardError);
    }

    [Fact]
    public async Task Run_KubeconfigWithBadField_NamesFileAndField()
    {
        var file = Path.GetTempFileName();
        try
        {
            File.WriteAllText(file, "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: { cluster: k, user: u }\nclusters:\n- name: k\n  cluster: { server: 'not a url' }\nusers:\n- name: u\n  user: { token: t }\n");

            var result = await RunInNamespaceAsync(["run", $"--kubeconfig={file}"]);

            Assert.Equal(1, result.ExitCode);
            Assert.Contains(file, result.StandardError);
            Assert.Contains("server", result.StandardError);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task Run_MalformedManifestAtStart_NamesFileAndLineAndFails()
    {
        var folder = Directory.CreateTempSubdirectory("proxyplanes-bad-");
        try
        {
            File.WriteAllText(Path.Combine(folder.FullName, "svc.yaml"), "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  clusterIP: 10.96.0.1\n  ports:\n    - port: abc\n");

            var result = await RunInNamespaceAsync(["run", $"--manifests={folder.FullName}"]);

            Assert.Equal(1, result.ExitCode);
            Assert.Contains($"{Path.Combine(folder.FullName, "svc.yaml")}:8:", result.StandardError);
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }
}
