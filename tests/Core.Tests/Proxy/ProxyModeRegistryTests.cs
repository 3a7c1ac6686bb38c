using Microsoft.Extensions.Logging;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Tests.Proxy;

public sealed class ProxyModeRegistryTests
{
    private static readonly ProxyModeRegistry Registry = new([new NamedMode("iptables"), new NamedMode("nftables")], notBuilt: ["ebpf"]);

    [Fact]
    public void Known_BuiltThenNotBuilt_InTheOrderGiven()
    {
        Assert.Equal(["iptables", "nftables", "ebpf"], Registry.Known);
        Assert.Equal(["iptables", "nftables"], Registry.BuiltNames);
        Assert.Equal(["ebpf"], Registry.NotBuilt);
    }

    [Fact]
    public void Find_BuiltMode_ReturnsItsDescriptor_NotBuiltOrUnknown_Null()
    {
        Assert.Equal("nftables", Registry.Find("nftables")?.Name);
        Assert.Null(Registry.Find("ebpf"));
        Assert.Null(Registry.Find("bogus"));
        Assert.Null(Registry.Find("IPTABLES")); // mode names are exact, as kube-proxy's
    }

    [Theory]
    [InlineData("iptables", null, null)]
    [InlineData("ebpf", null, "--mode=ebpf is not built yet; this build has iptables, nftables")]
    [InlineData("bogus", null, "--mode: 'bogus' is not a mode; use one of iptables, nftables, ebpf")]
    [InlineData("ebpf", "kp.yaml:3: mode", "kp.yaml:3: mode: ebpf is not built yet; this build has iptables, nftables")]
    [InlineData("bogus", "kp.yaml:3: mode", "kp.yaml:3: mode: 'bogus' is not a mode; use one of iptables, nftables, ebpf")]
    public void Problem_NamesTheSourceAndWhatToUse(string mode, string? source, string? expected)
    {
        Assert.Equal(expected, Registry.Problem(mode, source));
    }

    [Fact]
    public void Constructor_ModeNamedTwice_Throws()
    {
        Assert.Throws<ArgumentException>(() => new ProxyModeRegistry([new NamedMode("iptables")], notBuilt: ["iptables"]));
        Assert.Throws<ArgumentException>(() => new ProxyModeRegistry([new NamedMode("ipvs"), new NamedMode("ipvs")], notBuilt: []));
    }

    /// <summary>A descriptor that only has a name: the registry never calls the rest.</summary>
    private sealed class NamedMode(string name) : IProxyMode
    {
        public string Name => name;

        public Task<string?> KernelProblemAsync(CancellationToken cancellationToken) => throw new NotSupportedException();

        public Task<ProxyModeBackend> CreateAsync(ProxyModeOptions options, ProxyMetrics metrics, ILogger logger, CancellationToken cancellationToken) => throw new NotSupportedException();

        public Task CleanupAsync(ProxyMetrics metrics, ILogger logger, CleanupScope scope, CancellationToken cancellationToken) => throw new NotSupportedException();
    }
}
