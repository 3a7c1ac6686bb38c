using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Nftables.Tests;

public sealed class NftTransactionTests
{
    private static NftTransaction Tx(IpFamily family = IpFamily.IPv4) => new(family, "t");

    [Fact]
    public void ToString_RendersEveryObjectAsNftCommands()
    {
        var tx = Tx()
            .Add(new NftTable { Comment = "mine" })
            .Add(new NftChain("nat-prerouting") { Base = new NftBaseChain("nat", "prerouting", -100) })
            .Add(new NftChain("svc"))
            .Flush(new NftChain("svc"))
            .Add(new NftMap("m") { Type = new(["ipv4_addr", "inet_proto", "inet_service"]), ValueType = "verdict", Comment = "c" })
            .Add(new NftSet("aff") { Type = new(["ipv4_addr"]), Flags = new(["dynamic", "timeout"]), TimeoutSeconds = 60 })
            .Add(new NftRule("svc", "ip saddr @aff goto svc2") { Comment = "why" })
            .Add(new NftElement("m", "10.0.0.1", "tcp", "80") { Value = "goto svc" })
            .Delete(new NftElement("m", "10.0.0.2", "tcp", "80"))
            .Delete(new NftChain("old"))
            .Delete(new NftSet("aff-old"))
            .Flush(new NftMap("m"));

        Assert.Equal(
            """
            add table ip t { comment "mine" ; }
            add chain ip t nat-prerouting { type nat hook prerouting priority -100 ; policy accept ; }
            add chain ip t svc
            flush chain ip t svc
            add map ip t m { type ipv4_addr . inet_proto . inet_service : verdict ; comment "c" ; }
            add set ip t aff { type ipv4_addr ; flags dynamic,timeout ; timeout 60s ; }
            add rule ip t svc ip saddr @aff goto svc2 comment "why"
            add element ip t m { 10.0.0.1 . tcp . 80 : goto svc }
            delete element ip t m { 10.0.0.2 . tcp . 80 }
            delete chain ip t old
            delete set ip t aff-old
            flush map ip t m

            """.ReplaceLineEndings("\n"), tx.ToString());
    }

    [Fact]
    public void ToString_BatchesConsecutiveElementsOfOneSet()
    {
        var tx = Tx(IpFamily.IPv6)
            .Add(new NftElement("a", "1") { Value = "drop" })
            .Add(new NftElement("a", "2") { Value = "drop" })
            .Add(new NftElement("b", "3"))
            .Delete(new NftElement("b", "4"))
            .Delete(new NftElement("b", "5"));

        Assert.Equal(
            "add element ip6 t a {\n\t1 : drop,\n\t2 : drop,\n}\nadd element ip6 t b { 3 }\ndelete element ip6 t b {\n\t4,\n\t5,\n}\n",
            tx.ToString());
    }

    [Theory]
    [InlineData("")]
    [InlineData("has space")]
    [InlineData("semi;colon")]
    [InlineData("9starts-with-digit")]
    [InlineData("quote\"")]
    [InlineData("colon:s")]
    public void Add_InvalidChainName_IsRefused(string name) =>
        Assert.Throws<NftException>(() => Tx().Add(new NftChain(name)));

    [Fact]
    public void Add_NameLongerThanTheKernelTakes_IsRefused()
    {
        Tx().Add(new NftChain(new string('a', Nft.NameLengthMax)));
        Assert.Throws<NftException>(() => Tx().Add(new NftChain(new string('a', Nft.NameLengthMax + 1))));
    }

    [Theory]
    [InlineData("accept ; delete table ip t")]
    [InlineData("accept\nflush ruleset")]
    [InlineData("accept # comment")]
    [InlineData("iifname \"eth0 accept")]
    [InlineData("jump bad;name")]
    [InlineData("")]
    public void Add_RuleThatWouldSpillIntoAnotherCommand_IsRefused(string text) =>
        Assert.Throws<NftException>(() => Tx().Add(new NftRule("c", text)));

    [Theory]
    [InlineData("jump 9chain", "invalid chain name '9chain'")]
    [InlineData("ip saddr @aff goto x-ok jump  -x", "invalid chain name '-x'")]
    [InlineData("jump 1a goto 2b", "invalid chain name '1a'")]
    [InlineData("goto 2b jump 1a", "invalid chain name '2b'")]
    [InlineData("ip saddr @9set accept", "invalid set name '9set'")]
    [InlineData("ip saddr @ok ip daddr @-no accept", "invalid set name '-no'")]
    [InlineData("jump ok ip saddr @9set", "invalid set name '9set'")]
    public void Add_RuleReferencingAnInvalidName_IsRefused_NamingIt(string text, string message) =>
        Assert.Equal(message, Assert.Throws<NftException>(() => Tx().Add(new NftRule("c", text))).Message);

    [Fact]
    public void Add_RuleReferencingValidNames_IsAccepted()
    {
        Tx().Add(new NftRule("c", "ip saddr @aff goto endpoint-x/ns.a_b meta l4proto . th dport vmap @m jump other"))
            .Add(new NftRule("c", "ip saddr x@y accept")) // '@' inside a word is not a reference, as SetReferences reads it
            .Add(new NftElement("m", "1") { Value = "goto service-ABC-ns/web/tcp/http" });
    }

    [Fact]
    public void Add_ElementGoingToAnInvalidChainName_IsRefused() =>
        Assert.Equal("invalid chain name '9x'", Assert.Throws<NftException>(() => Tx().Add(new NftElement("m", "1") { Value = "goto 9x" })).Message);

    [Theory]
    [InlineData("1.2.3.4, 5.6.7.8")]
    [InlineData("1.2.3.4 }")]
    [InlineData("")]
    public void Add_ElementKeyThatWouldEndTheList_IsRefused(string key) =>
        Assert.Throws<NftException>(() => Tx().Add(new NftElement("s", key)));

    [Fact]
    public void Validation_CoversVerbsAndDefinitions()
    {
        Assert.Throws<NftException>(() => Tx().Add(new NftSet("s")));                                       // no type
        Assert.Throws<NftException>(() => Tx().Add(new NftMap("m") { Type = new(["ipv4_addr"]) }));          // no value type
        Assert.Throws<NftException>(() => Tx().Delete(new NftElement("m", "1") { Value = "drop" }));         // deleted by key only
        Assert.Throws<NftException>(() => Tx().Flush(new NftRule("c", "accept")));
        Assert.Throws<NftException>(() => Tx().Delete(new NftRule("c", "accept")));
        Assert.Throws<NftException>(() => Tx().Add(new NftChain("c") { Base = new NftBaseChain("nat", "sideways", 0) }));
        Assert.Throws<NftException>(() => Tx().Add(new NftRule("c", "accept") { Comment = new string('x', 129) }));
        Assert.Throws<NftException>(() => Tx().Add(new NftSet("s") { Type = new(["ipv4_addr; flush ruleset"]) }));
        // Flush and delete need only the name.
        Tx().Flush(new NftSet("s")).Delete(new NftMap("m"));
    }

    [Fact]
    public void Rule_References_AreReadFromItsText()
    {
        var rule = new NftRule("c", "ip saddr @aff goto endpoint-x meta l4proto . th dport vmap @m jump other");

        Assert.Equal(["endpoint-x", "other"], rule.ChainReferences);
        Assert.Equal(["aff", "m"], rule.SetReferences);
    }
}
