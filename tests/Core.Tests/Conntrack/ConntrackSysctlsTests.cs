using Microsoft.Extensions.Logging;
using ProxyPlanes.TestKit;
using ProxyPlanes.NodeTools.Conntrack;

namespace ProxyPlanes.Core.Tests.Conntrack;

/// <summary>kube-proxy's conntrack settings against a fake /proc/sys and hashsize file (the kernel test writes the real ones).</summary>
public sealed class ConntrackSysctlsTests : IDisposable
{
    private readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("pp-sysctl-");
    private readonly ListLogger _logger = new();

    public ConntrackSysctlsTests()
    {
        Directory.CreateDirectory(Netfilter);
        foreach (var (name, value) in new[]
                 {
                     ("nf_conntrack_max", "65536"), ("nf_conntrack_tcp_timeout_established", "432000"), ("nf_conntrack_tcp_timeout_close_wait", "60"),
                     ("nf_conntrack_tcp_be_liberal", "0"), ("nf_conntrack_udp_timeout", "30"), ("nf_conntrack_udp_timeout_stream", "120"),
                 })
            File.WriteAllText(Path.Combine(Netfilter, name), value + "\n");
        File.WriteAllText(HashSize, "16384\n");
    }

    private string Netfilter => Path.Combine(_root.FullName, "net", "netfilter");

    private string HashSize => Path.Combine(_root.FullName, "hashsize");

    private string Value(string name) => File.ReadAllText(Path.Combine(Netfilter, name)).Trim();

    private ConntrackSysctls Sysctls() => new(_logger, _root.FullName, HashSize);

    [Fact]
    public void Apply_EverySetting_WritesKubeProxysValues()
    {
        var failed = Sysctls().Apply(new ConntrackSysctlPlan(131072, TimeSpan.FromHours(24), TimeSpan.FromHours(1), true, TimeSpan.FromSeconds(45), TimeSpan.FromMinutes(3)));

        Assert.Empty(failed);
        Assert.Equal("131072", Value("nf_conntrack_max"));
        Assert.Equal("32768", File.ReadAllText(HashSize).Trim()); // max/4
        Assert.Equal("86400", Value("nf_conntrack_tcp_timeout_established"));
        Assert.Equal("3600", Value("nf_conntrack_tcp_timeout_close_wait"));
        Assert.Equal("1", Value("nf_conntrack_tcp_be_liberal"));
        Assert.Equal("45", Value("nf_conntrack_udp_timeout"));
        Assert.Equal("180", Value("nf_conntrack_udp_timeout_stream"));
        Assert.Contains(_logger.Entries, e => e.Message.Contains("net.netfilter.nf_conntrack_max to 131072", StringComparison.Ordinal));
    }

    [Fact]
    public void Apply_ZerosAndAHigherMax_LeaveTheNodesValues()
    {
        File.WriteAllText(Path.Combine(Netfilter, "nf_conntrack_max"), "1000000\n");

        var failed = Sysctls().Apply(new ConntrackSysctlPlan(131072, TimeSpan.Zero, TimeSpan.Zero, false, TimeSpan.Zero, TimeSpan.Zero));

        Assert.Empty(failed);
        Assert.Equal("1000000", Value("nf_conntrack_max")); // never lowered
        Assert.Equal("16384", File.ReadAllText(HashSize).Trim());
        Assert.Equal("432000", Value("nf_conntrack_tcp_timeout_established"));
        Assert.Equal("0", Value("nf_conntrack_tcp_be_liberal"));
        Assert.Equal("30", Value("nf_conntrack_udp_timeout"));
        Assert.DoesNotContain(_logger.Entries, e => e.Level >= LogLevel.Information);
    }

    [Fact]
    public void Apply_ReadOnlySysctls_OneWarningEach_TheRestStillApplied()
    {
        // A directory where a file should be: writing it fails as a read-only /proc/sys entry does.
        foreach (var name in new[] { "nf_conntrack_max", "nf_conntrack_udp_timeout" })
        {
            File.Delete(Path.Combine(Netfilter, name));
            Directory.CreateDirectory(Path.Combine(Netfilter, name));
        }

        var failed = Sysctls().Apply(new ConntrackSysctlPlan(131072, TimeSpan.FromHours(2), TimeSpan.Zero, false, TimeSpan.FromSeconds(45), TimeSpan.Zero));

        Assert.Equal(["conntrack.maxPerCore/min", "conntrack.udpTimeout"], failed);
        var warnings = _logger.Entries.Where(e => e.Level == LogLevel.Warning).Select(e => e.Message).ToList();
        Assert.Equal(2, warnings.Count);
        Assert.Contains(warnings, w => w.StartsWith("conntrack.maxPerCore/min: cannot set net.netfilter.nf_conntrack_max to 131072", StringComparison.Ordinal));
        Assert.Contains(warnings, w => w.StartsWith("conntrack.udpTimeout: cannot set net.netfilter.nf_conntrack_udp_timeout to 45", StringComparison.Ordinal));
        Assert.Equal("16384", File.ReadAllText(HashSize).Trim()); // no hash growth without the max
        Assert.Equal("7200", Value("nf_conntrack_tcp_timeout_established"));
    }

    public void Dispose() => _root.Delete(recursive: true);
}
