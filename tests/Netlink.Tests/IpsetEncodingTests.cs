using System.Net;
using Nl = ProxyPlanes.Netlink.LinuxUapi.Netlink;

namespace ProxyPlanes.Netlink.Tests;

/// <summary>
/// ipset element messages against byte vectors made by hand from ip_set.h (nfgenmsg, IPSET_ATTR_PROTOCOL,
/// IPSET_ATTR_SETNAME, the IPSET_ATTR_DATA nest with the address nests and the port in network byte
/// order, both flagged as ip_set requires). What the kernel makes of them: IpsetNetlinkKernelTests in
/// tests/Backends.Ipvs.Tests (compared with ipset restore in a namespace).
/// </summary>
public sealed class IpsetEncodingTests
{
    private static byte[] Write(NetlinkRequest request)
    {
        var buffer = new byte[4096];
        var writer = new NetlinkWriter(buffer);
        var start = writer.BeginMessage(request.Type, (ushort)(request.Flags | Nl.NLM_F_REQUEST), 7);
        request.Write(ref writer);
        writer.EndMessage(start);
        return writer.Written.ToArray();
    }

    private static readonly IpsetElement LoopBack = new(IPAddress.Parse("10.0.0.1"), 80, 6, IPAddress.Parse("10.0.0.2"), Comment: "dropped on delete");

    [Fact]
    public void Delete_HashIpPortIp_MatchesVector()
    {
        var bytes = Write(IpsetClient.DeleteRequest("KUBE-LOOP-BACK", LoopBack, exist: true, "ipset del"));

        Assert.Equal(Hex.Parse("""
            5c 00 00 00  0a 06  01 00  07 00 00 00  00 00 00 00
            02 00 00 00
            05 00 01 00  07 00 00 00
            13 00 02 00  4b 55 42 45 2d 4c 4f 4f 50 2d 42 41 43 4b 00 00
            2c 00 07 80
              0c 00 01 80  08 00 01 40  0a 00 00 01
              06 00 04 40  00 50 00 00
              05 00 07 00  06 00 00 00
              0c 00 14 80  08 00 01 40  0a 00 00 02
            """), bytes);
    }

    [Fact]
    public void Add_WithoutExist_AsksForExcl_WithExist_DoesNot()
    {
        Assert.Equal(Nl.NLM_F_EXCL, IpsetClient.AddRequest("KUBE-LOOP-BACK", LoopBack, exist: false, "ipset add").Flags);
        Assert.Equal(0, IpsetClient.AddRequest("KUBE-LOOP-BACK", LoopBack, exist: true, "ipset add").Flags);
        Assert.Equal(0x0609, IpsetClient.AddRequest("KUBE-LOOP-BACK", LoopBack, exist: true, "ipset add").Type);
    }

    [Fact]
    public void Add_BitmapPortWithComment_MatchesVector()
    {
        var bytes = Write(IpsetClient.AddRequest("KUBE-NODE-PORT-TCP", new IpsetElement(Port: 30080, Comment: "ns/a:b"), exist: true, "ipset add"));

        Assert.Equal(Hex.Parse("""
            4c 00 00 00  09 06  01 00  07 00 00 00  00 00 00 00
            00 00 00 00
            05 00 01 00  07 00 00 00
            17 00 02 00  4b 55 42 45 2d 4e 4f 44 45 2d 50 4f 52 54 2d 54 43 50 00 00
            18 00 07 80
              06 00 04 40  75 80 00 00
              0b 00 1a 00  6e 73 2f 61 3a 62 00 00
            """), bytes);
    }

    [Fact]
    public void SetNameTooLong_Refused()
    {
        Assert.Throws<ArgumentException>(() => IpsetClient.AddRequest(new string('K', 32), LoopBack, exist: true, "ipset add"));
    }
}
