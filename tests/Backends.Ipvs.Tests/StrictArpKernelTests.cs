using ProxyPlanes.Netlink.Tests;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Backends.Ipvs.Tests;

/// <summary>
/// <c>ipvs.strictARP</c> written by the real writer (<see cref="IpvsKernel.EnsureStrictArp(Microsoft.Extensions.Logging.ILogger)"/>,
/// on a thread inside a network namespace this test made: net.ipv4.conf.all.* is per namespace) and read
/// back with <c>sysctl</c> in that namespace. No IPVS needed; the machine's own namespace is only read.
/// </summary>
[Collection(IpvsKernelCollection.Name)]
public sealed class StrictArpKernelTests
{
    private static readonly string[] Names = ["net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce"];

    private static async Task<string[]> ValuesAsync(TestNamespace ns) =>
        (await ns.ExecAsync(["sysctl", "-n", .. Names])).Split('\n', StringSplitOptions.RemoveEmptyEntries);

    private static string[] RootValues() => [.. Names.Select(n => File.ReadAllText("/proc/sys/" + n.Replace('.', '/')).Trim())];

    [Theory]
    [InlineData("0", "0", "1", "2")] // a fresh namespace's defaults: both raised
    [InlineData("2", "1", "2", "2")] // arp_ignore already stricter: kept; arp_announce raised
    public async Task EnsureStrictArp_InANamespace_RaisesItsValues_TheMachinesStay(string ignoreBefore, string announceBefore, string ignoreAfter, string announceAfter)
    {
        var root = RootValues();
        using var ns = new TestNamespace("arp");
        await ns.ExecAsync("sysctl", "-w", $"{Names[0]}={ignoreBefore}", $"{Names[1]}={announceBefore}");
        Assert.Equal([ignoreBefore, announceBefore], await ValuesAsync(ns)); // positive control: not what strictARP asks
        var logger = new ListLogger();
        using var kernel = new IpvsKernel(new IpvsKernelOptions { InNamespace = action => ns.Namespace.Run(action) });

        var failed = kernel.EnsureStrictArp(logger);

        Assert.Empty(failed);
        Assert.Equal([ignoreAfter, announceAfter], await ValuesAsync(ns));
        Assert.Contains(logger.Entries, e => e.Message == $"ipvs.strictARP: set net.ipv4.conf.all.arp_announce to 2 (was {announceBefore})");
        Assert.Equal(root, RootValues());
    }
}
