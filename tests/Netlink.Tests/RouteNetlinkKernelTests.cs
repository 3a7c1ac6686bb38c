using System.Net;
using System.Text.Json;
using static ProxyPlanes.Netlink.LinuxUapi;
using Genl = ProxyPlanes.Netlink.LinuxUapi.GenericNetlink;
using Nl = ProxyPlanes.Netlink.LinuxUapi.Netlink;

namespace ProxyPlanes.Netlink.Tests;

/// <summary>
/// rtnetlink against the real kernel, inside a network namespace each test creates (the socket is
/// opened on a thread that entered it), checked against what <c>ip -j</c> reports there.
/// </summary>
[Collection(KernelNetlinkCollection.Name)]
public sealed class RouteNetlinkKernelTests
{
    private const string LinkName = "kube-ipvs0";

    /// <summary>
    /// Creates kube-ipvs0 as a dummy link; on a kernel without the dummy type (this host has none)
    /// a bridge stands in: the address tests only need a link that holds addresses.
    /// </summary>
    private static LinkInfo CreateTestLink(RouteNetlink rtnl)
    {
        try
        {
            return rtnl.CreateLink(LinkName, "dummy");
        }
        catch (NetlinkException e) when (e.Errno == Errno.EOPNOTSUPP)
        {
            return rtnl.CreateLink(LinkName, "bridge");
        }
    }

    [Fact]
    public void CreateLink_Dummy_CreatedOrRefusedWithAClearError()
    {
        using var ns = new TestNamespace("nl");
        using var rtnl = ns.Run(RouteNetlink.Open);

        if (KernelConfig.Has("CONFIG_DUMMY") == false)
        {
            var e = Assert.Throws<NetlinkException>(() => rtnl.CreateLink(LinkName, "dummy"));
            Assert.Equal(Errno.EOPNOTSUPP, e.Errno);
            Assert.StartsWith("rtnetlink RTM_NEWLINK kube-ipvs0 type dummy: Operation not supported (EOPNOTSUPP)", e.Message);
            Assert.EndsWith("the kernel has no dummy link type (modprobe dummy)", e.Message);
            Assert.Equal("Unknown device type", e.KernelMessage); // the extended ACK
            return;
        }
        var link = rtnl.CreateLink(LinkName, "dummy");
        Assert.Equal("dummy", link.Kind);
        Assert.False(link.IsUp);
    }

    [Fact]
    public async Task Addresses_AddListDelete_MatchIpJson()
    {
        using var ns = new TestNamespace("nl");
        using var rtnl = ns.Run(RouteNetlink.Open);
        var link = CreateTestLink(rtnl);
        IPAddress[] addresses = [IPAddress.Parse("10.96.0.10"), IPAddress.Parse("10.96.0.11"), IPAddress.Parse("fd00:10:96::10"), IPAddress.Parse("198.51.100.7")];

        foreach (var address in addresses) rtnl.AddAddress(link, address, address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128);

        var listed = rtnl.ListAddresses(link).Select(a => a.ToString()).Order().ToList();
        Assert.Equal(addresses.Select(a => a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? $"{a}/32" : $"{a}/128").Order(), listed);
        Assert.Equal(listed, await IpAddressesAsync(ns, LinkName));
        Assert.Equal(["10.96.0.10/32", "10.96.0.11/32", "198.51.100.7/32"], rtnl.ListAddresses(link, Socket.AF_INET).Select(a => a.ToString()).Order());
        Assert.Equal(["fd00:10:96::10/128"], rtnl.ListAddresses(link, Socket.AF_INET6).Select(a => a.ToString()));
        Assert.Contains(rtnl.ListAddresses(link, Socket.AF_INET6), a => (a.Flags & IfAddr.IFA_F_NODAD) != 0);

        rtnl.DeleteAddress(link, IPAddress.Parse("10.96.0.11"), 32);
        rtnl.DeleteAddress(link, IPAddress.Parse("fd00:10:96::10"), 128);

        Assert.Equal(["10.96.0.10/32", "198.51.100.7/32"], await IpAddressesAsync(ns, LinkName));
        Assert.Equal(["10.96.0.10/32", "198.51.100.7/32"], rtnl.ListAddresses(link).Select(a => a.ToString()).Order());
    }

    [Fact]
    public async Task Address_AddedTwice_FailsWithEexistNamingIt()
    {
        using var ns = new TestNamespace("nl");
        using var rtnl = ns.Run(RouteNetlink.Open);
        var link = CreateTestLink(rtnl);
        rtnl.AddAddress(link, IPAddress.Parse("10.96.0.10"), 32);

        var e = Assert.Throws<NetlinkException>(() => rtnl.AddAddress(link, IPAddress.Parse("10.96.0.10"), 32));

        Assert.Equal(Errno.EEXIST, e.Errno);
        Assert.StartsWith("rtnetlink RTM_NEWADDR 10.96.0.10/32 dev kube-ipvs0: File exists (EEXIST)", e.Message);
        Assert.Equal(["10.96.0.10/32"], await IpAddressesAsync(ns, LinkName));
    }

    [Fact]
    public async Task Link_UpDownAndDelete_MatchIpJson()
    {
        using var ns = new TestNamespace("nl");
        using var rtnl = ns.Run(RouteNetlink.Open);
        var link = CreateTestLink(rtnl);
        Assert.Equal(link.Index, rtnl.FindLink(LinkName)!.Index);

        rtnl.SetLinkUp(link, true);
        Assert.True(rtnl.FindLink(LinkName)!.IsUp);
        Assert.Contains("UP", await IpLinkFlagsAsync(ns, LinkName));

        rtnl.SetLinkUp(link, false);
        Assert.False(rtnl.FindLink(LinkName)!.IsUp);
        Assert.DoesNotContain("UP", await IpLinkFlagsAsync(ns, LinkName));

        Assert.Contains(rtnl.ListLinks(), l => l.Name == LinkName);
        Assert.Contains(rtnl.ListLinks(), l => l.Name == "lo" && l.IsLoopback);

        rtnl.DeleteLink(link);
        Assert.Null(rtnl.FindLink(LinkName));
        Assert.DoesNotContain(LinkName, await ns.ExecAsync("ip", "-o", "link"));
    }

    [Fact]
    public void DeleteLink_Missing_FailsNamingIt()
    {
        using var ns = new TestNamespace("nl");
        using var rtnl = ns.Run(RouteNetlink.Open);

        var e = Assert.Throws<NetlinkException>(() => rtnl.DeleteLink(new LinkInfo(4242, "nothing", 0, null)));

        Assert.Equal(Errno.ENODEV, e.Errno);
        Assert.StartsWith("rtnetlink RTM_DELLINK nothing: No such device (ENODEV)", e.Message);
    }

    [Fact]
    public async Task Batch_ManyAddressesWithOneDuplicate_AppliesTheRestAndNamesTheDuplicate()
    {
        using var ns = new TestNamespace("nl");
        using var rtnl = ns.Run(RouteNetlink.Open);
        var link = CreateTestLink(rtnl);
        var requests = Enumerable.Range(0, 300).Select(i => AddRequest(link, IPAddress.Parse($"10.97.{i / 250}.{i % 250 + 1}"))).ToList();
        requests.Insert(150, AddRequest(link, IPAddress.Parse("10.97.0.10")));

        var e = Assert.Throws<NetlinkException>(() => rtnl.Socket.ExecuteBatch(requests));

        Assert.Equal(Errno.EEXIST, e.Errno);
        Assert.StartsWith("rtnetlink RTM_NEWADDR 10.97.0.10/32 dev kube-ipvs0: File exists", e.Message);
        Assert.Equal(300, rtnl.ListAddresses(link).Count);
        Assert.Equal(300, (await IpAddressesAsync(ns, LinkName)).Count);
    }

    [Fact]
    public void Dump_DatagramsLargerThanTheBuffer_GrowsItAndRetries()
    {
        using var ns = new TestNamespace("nl");
        using var rtnl = ns.Run(RouteNetlink.Open);
        var link = CreateTestLink(rtnl);
        rtnl.Socket.ExecuteBatch(Enumerable.Range(0, 1000).Select(i => AddRequest(link, IPAddress.Parse($"10.98.{i / 250}.{i % 250 + 1}"))).ToList());
        using var small = new RouteNetlink(ns.Run(() => NetlinkSocket.Open(Nl.NETLINK_ROUTE, null, 256)));

        var listed = small.ListAddresses(link);

        Assert.Equal(1000, listed.Count);
        Assert.True(small.Socket.ReceiveBufferSize > 256);
    }

    private static NetlinkRequest AddRequest(LinkInfo link, IPAddress address) =>
        new(Rtnetlink.RTM_NEWADDR, Nl.NLM_F_CREATE | Nl.NLM_F_EXCL,
            (ref NetlinkWriter w) => RouteNetlink.WriteAddress(ref w, link.Index, address, 32, 0),
            $"rtnetlink RTM_NEWADDR {address}/32 dev {link.Name}");

    private static async Task<List<string>> IpAddressesAsync(TestNamespace ns, string link)
    {
        using var json = JsonDocument.Parse(await ns.ExecAsync("ip", "-j", "addr", "show", "dev", link));
        return json.RootElement.EnumerateArray()
            .SelectMany(l => l.GetProperty("addr_info").EnumerateArray())
            .Where(a => a.GetProperty("scope").GetString() != "link")
            .Select(a => $"{a.GetProperty("local").GetString()}/{a.GetProperty("prefixlen").GetInt32()}")
            .Order().ToList();
    }

    private static async Task<List<string>> IpLinkFlagsAsync(TestNamespace ns, string link)
    {
        using var json = JsonDocument.Parse(await ns.ExecAsync("ip", "-j", "link", "show", "dev", link));
        return json.RootElement[0].GetProperty("flags").EnumerateArray().Select(f => f.GetString()!).ToList();
    }
}

[CollectionDefinition(Name)]
public sealed class KernelNetlinkCollection
{
    // Namespace tests run one at a time (cheap, but `ip netns` serializes anyway).
    public const string Name = "kernel-netlink";
}
