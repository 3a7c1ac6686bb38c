using System.Collections.Immutable;
using System.Net;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Tests.Proxy;

/// <summary>
/// <see cref="EndpointInfo"/> keeps its two hint lists in one object that only hinted endpoints have (issue 13):
/// the properties, equality and <c>with</c> copies behave as if each were its own field.
/// </summary>
public class EndpointInfoTests
{
    private static EquatableArray<string> Names(params string[] names) => new(ImmutableArray.Create(names));

    private static EndpointInfo Plain() => new(IPAddress.Parse("10.0.0.1"), 8080);

    [Fact]
    public void Hints_SetInEitherOrder_BothKept()
    {
        var zonesFirst = Plain() with { ZoneHints = Names("a"), NodeHints = Names("n1") };
        var nodesFirst = new EndpointInfo(IPAddress.Parse("10.0.0.1"), 8080) { NodeHints = Names("n1"), ZoneHints = Names("a") };

        Assert.Equal(Names("a"), zonesFirst.ZoneHints);
        Assert.Equal(Names("n1"), zonesFirst.NodeHints);
        Assert.Equal(zonesFirst, nodesFirst);
        Assert.Equal(zonesFirst.GetHashCode(), nodesFirst.GetHashCode());
    }

    [Fact]
    public void Hints_OneSet_TheOtherStaysNull()
    {
        var zoned = Plain() with { ZoneHints = Names("a") };
        var noded = Plain() with { NodeHints = Names("n1") };

        Assert.Null(zoned.NodeHints);
        Assert.Null(noded.ZoneHints);
        Assert.Null(Plain().ZoneHints);
        Assert.Null(Plain().NodeHints);
        Assert.NotEqual(zoned, noded);
    }

    [Fact]
    public void Equality_ComparesHintsByValue()
    {
        Assert.Equal(Plain() with { ZoneHints = Names("a", "b") }, Plain() with { ZoneHints = Names("a", "b") });
        Assert.NotEqual(Plain() with { ZoneHints = Names("a") }, Plain() with { ZoneHints = Names("b") });
        Assert.NotEqual(Plain() with { NodeHints = Names("n1") }, Plain() with { NodeHints = Names("n2") });
        Assert.NotEqual(Plain(), Plain() with { ZoneHints = Names("a") });
        // An empty list is a hint (the slice hints the endpoint for no zone), not the absence of one.
        Assert.NotEqual(Plain(), Plain() with { ZoneHints = EquatableArray<string>.Empty });
    }

    [Fact]
    public void With_ChangingOneHintOrClearingIt_KeepsTheOther()
    {
        var both = Plain() with { ZoneHints = Names("a"), NodeHints = Names("n1") };

        var otherZone = both with { ZoneHints = Names("b") };
        var noNodes = both with { NodeHints = null };
        var none = noNodes with { ZoneHints = null };

        Assert.Equal(Names("n1"), otherZone.NodeHints);
        Assert.Equal(Names("b"), otherZone.ZoneHints);
        Assert.Equal(Names("a"), noNodes.ZoneHints);
        Assert.Null(noNodes.NodeHints);
        Assert.Equal(Plain(), none);
        Assert.Equal(Names("a"), both.ZoneHints); // the original is not changed
    }

    [Fact]
    public void UnhintedEndpoint_TakesNoRoomForHints()
    {
        // Allocation accounting, not timing: an endpoint without hints is the record alone, 56 bytes on 64-bit
        // (it was 80 with two nullable arrays inline).
        var address = IPAddress.Parse("10.0.0.1");
        _ = new EndpointInfo(address, 1); // JIT and type loading out of the way
        var before = GC.GetAllocatedBytesForCurrentThread();
        var endpoint = new EndpointInfo(address, 8080) { NodeName = "node-1", Zone = "a" };
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        GC.KeepAlive(endpoint);
        Assert.True(allocated <= 56, $"an unhinted EndpointInfo took {allocated} bytes");
    }
}
