using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Nftables.Tests;

/// <summary>The in-memory nftables refuses what the kernel would, and applies transactions atomically.</summary>
public sealed class FakeNftablesTests
{
    private static NftTransaction Tx() => new(IpFamily.IPv4, "t");

    private static FakeNftables WithBasics()
    {
        var fake = new FakeNftables();
        fake.Apply(Tx()
            .Add(new NftTable())
            .Add(new NftChain("base") { Base = new NftBaseChain("nat", "prerouting", -100) })
            .Add(new NftChain("a"))
            .Add(new NftChain("b"))
            .Add(new NftMap("m") { Type = new(["ipv4_addr", "inet_proto", "inet_service"]), ValueType = "verdict" })
            .Add(new NftSet("s") { Type = new(["ipv4_addr"]) })
            .Add(new NftSet("ranges") { Type = new(["ipv4_addr"]), Flags = new(["interval"]) })
            .Add(new NftRule("base", "jump a"))
            .Add(new NftRule("a", "ip saddr @s goto b"))
            .Add(new NftElement("m", "10.0.0.1", "tcp", "80") { Value = "goto b" }));
        return fake;
    }

    public static IEnumerable<object[]> Refused() =>
        new (string Why, Func<NftTransaction, NftTransaction> Build)[]
        {
            ("rule in a missing chain", tx => tx.Add(new NftRule("nope", "accept"))),
            ("rule jumping to a missing chain", tx => tx.Add(new NftRule("a", "jump nope"))),
            ("rule jumping to a base chain", tx => tx.Add(new NftRule("a", "jump base"))),
            ("rule using a missing set", tx => tx.Add(new NftRule("a", "ip saddr @nope accept"))),
            ("element of a missing map", tx => tx.Add(new NftElement("nope", "1") { Value = "drop" })),
            ("map element without a value", tx => tx.Add(new NftElement("m", "10.0.0.2", "tcp", "80"))),
            ("set element with a value", tx => tx.Add(new NftElement("s", "10.0.0.2") { Value = "drop" })),
            ("key with the wrong number of parts", tx => tx.Add(new NftElement("m", "10.0.0.2", "tcp") { Value = "drop" })),
            ("element going to a missing chain", tx => tx.Add(new NftElement("m", "10.0.0.2", "tcp", "80") { Value = "goto nope" })),
            ("element re-added with another value", tx => tx.Add(new NftElement("m", "10.0.0.1", "tcp", "80") { Value = "goto a" })),
            ("element added twice in one transaction", tx => tx.Add(new NftElement("s", "1.1.1.1")).Add(new NftElement("s", "1.1.1.1"))),
            ("chain added twice in one transaction", tx => tx.Add(new NftChain("c")).Add(new NftChain("c"))),
            ("set added twice in one transaction", tx => tx.Add(new NftSet("x") { Type = new(["ipv4_addr"]) }).Add(new NftSet("x") { Type = new(["ipv4_addr"]) })),
            ("regular chain re-added as a base chain", tx => tx.Add(new NftChain("a") { Base = new NftBaseChain("filter", "input", 0) })),
            ("set re-added with another type", tx => tx.Add(new NftSet("s") { Type = new(["ipv6_addr"]) })),
            ("set re-added as a map", tx => tx.Add(new NftMap("s") { Type = new(["ipv4_addr"]), ValueType = "verdict" })),
            ("deleting a chain an element goes to", tx => tx.Delete(new NftChain("b"))),
            ("deleting a chain a rule jumps to", tx => tx.Delete(new NftChain("a"))),
            ("deleting a set a rule uses", tx => tx.Delete(new NftSet("s"))),
            ("deleting a missing chain", tx => tx.Delete(new NftChain("nope"))),
            ("deleting a missing element", tx => tx.Delete(new NftElement("m", "10.0.0.9", "tcp", "80"))),
            ("flushing a missing set", tx => tx.Flush(new NftSet("nope"))),
            ("overlapping intervals", tx => tx.Add(new NftElement("ranges", "10.0.0.0/8")).Add(new NftElement("ranges", "10.1.0.0/16"))),
        }.Select(c => new object[] { c.Why, c.Build });

    [Theory]
    [MemberData(nameof(Refused))]
    public void Apply_RefusesWhatTheKernelWould_AndChangesNothing(string why, Func<NftTransaction, NftTransaction> build)
    {
        var fake = WithBasics();
        var before = fake.Dump(IpFamily.IPv4, "t");

        // A valid first operation proves the transaction is all-or-nothing.
        var e = Assert.Throws<NftException>(() => fake.Apply(build(Tx().Add(new NftChain("fresh")))));

        Assert.False(string.IsNullOrEmpty(e.Message), why);
        Assert.Equal(before, fake.Dump(IpFamily.IPv4, "t"));
    }

    [Fact]
    public void Apply_WithoutTheTable_IsRefused() =>
        Assert.Throws<NftException>(() => new FakeNftables().Apply(Tx().Add(new NftChain("a"))));

    [Fact]
    public void Apply_ReleasingReferencesFirst_AllowsDeletes()
    {
        var fake = WithBasics();

        fake.Apply(Tx()
            .Delete(new NftElement("m", "10.0.0.1", "tcp", "80"))
            .Flush(new NftChain("a"))
            .Delete(new NftSet("s"))
            .Delete(new NftChain("b"))
            // Re-adding an identical element or object is not an error; adjacent intervals are fine.
            .Add(new NftSet("ranges") { Type = new(["ipv4_addr"]), Flags = new(["interval"]) })
            .Add(new NftElement("ranges", "10.0.0.0/25"))
            .Add(new NftElement("ranges", "10.0.0.128/25")));

        Assert.Equal(["jump a"], fake.Rules(IpFamily.IPv4, "base", "t"));
        Assert.Empty(fake.Elements(IpFamily.IPv4, "m", "t"));
        Assert.Equal(2, fake.Applied);
    }

    [Fact]
    public async Task Read_ReportsDefinitions()
    {
        var fake = WithBasics();

        var state = await fake.ReadAsync(IpFamily.IPv4, "t", default);

        Assert.True(state.TableExists);
        Assert.Equal(new NftBaseChain("nat", "prerouting", -100), state.Chains["base"].Base);
        Assert.Null(state.Chains["a"].Base);
        Assert.Equal(["ipv4_addr", "inet_proto", "inet_service"], state.Maps["m"].Type);
        Assert.Equal(["interval"], state.Sets["ranges"].Flags);
        Assert.False((await fake.ReadAsync(IpFamily.IPv6, "t", default)).TableExists);
    }

    [Fact]
    public void DeleteTable_RemovesEverything()
    {
        var fake = WithBasics();

        fake.Apply(Tx().Add(new NftTable()).Delete(new NftTable()));

        Assert.False(fake.HasTable(IpFamily.IPv4, "t"));
    }
}
