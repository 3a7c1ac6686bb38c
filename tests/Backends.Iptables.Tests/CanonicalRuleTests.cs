using ProxyPlanes.Iptables;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Backends.Iptables.Tests;

/// <summary>
/// The canonical form of a rule as the planner writes it and as iptables-save (1.8.9, nft and legacy alike)
/// prints it back: the pairs below were read from the real tools. Positive and negative pairs: rules that
/// differ for the kernel must not read as one.
/// </summary>
public sealed class CanonicalRuleTests
{
    public static TheoryData<string, string> SameRule => new()
    {
        { "-m comment --comment \"shop/web:http cluster IP\" -m tcp -p tcp -d 10.96.0.23/32 --dport 80 -j KUBE-SVC-67NZLRHBNDSAWJRO",
          "-d 10.96.0.23/32 -p tcp -m comment --comment \"shop/web:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-67NZLRHBNDSAWJRO" },
        { "-m comment --comment \"shop/web:http cluster IP\" -m tcp -p tcp -d 10.96.0.23/32 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ",
          "! -s 10.244.0.0/16 -d 10.96.0.23/32 -p tcp -m comment --comment \"shop/web:http cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ" },
        { "-m comment --comment \"shop/web:http -> 10.244.1.2:8080\" -m recent --name KUBE-SEP-X --rcheck --seconds 60 --reap -j KUBE-SEP-X",
          "-m comment --comment \"shop/web:http -> 10.244.1.2:8080\" -m recent --rcheck --seconds 60 --reap --name KUBE-SEP-X --mask 255.255.255.255 --rsource -j KUBE-SEP-X" },
        { "-m comment --comment \"shop/web:http -> 10.244.1.2:8080\" -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-X",
          "-m comment --comment \"shop/web:http -> 10.244.1.2:8080\" -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-X" },
        { "-m comment --comment shop/web:http -m recent --name KUBE-SEP-X --set -m tcp -p tcp -j DNAT --to-destination 10.244.1.2:8080",
          "-p tcp -m comment --comment \"shop/web:http\" -m recent --set --name KUBE-SEP-X --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.244.1.2:8080" },
        { "-j MARK --or-mark 0x4000", "-j MARK --set-xmark 0x4000/0x4000" },
        { "-j MARK --xor-mark 0x4000", "-j MARK --set-xmark 0x4000/0x0" },
        { "-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS",
          "! -d 127.0.0.0/8 -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS" },
        { "-d 0.0.0.5/0.0.0.63 -j KUBE-SERVICES-05", "-d 0.0.0.5/0.0.0.63 -j KUBE-SERVICES-05" },
        { "-d fd00::0017/128 -j X", "-d fd00::17/128 -j X" },
        { "-d 10.0.0.1 -j X", "-d 10.0.0.1/32 -j X" },
        { "-m tcp -p tcp -d fd00::7/128 --dport 80 -j REJECT", "-d fd00::7/128 -p tcp -m tcp --dport 80 -j REJECT --reject-with icmp6-port-unreachable" },
        { "-d 10.0.0.7/32 -j REJECT", "-d 10.0.0.7/32 -j REJECT --reject-with icmp-port-unreachable" },
    };

    public static TheoryData<string, string> DifferentRule => new()
    {
        { "-d 10.96.0.23/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A", "-d 10.96.0.23/32 -p tcp -m tcp --dport 81 -j KUBE-SVC-A" },
        { "-d 10.96.0.23/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A", "-d 10.96.0.23/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-B" },
        { "-s 10.244.0.0/16 -j KUBE-MARK-MASQ", "! -s 10.244.0.0/16 -j KUBE-MARK-MASQ" },
        { "-m statistic --mode random --probability 0.5000000000 -j X", "-m statistic --mode random --probability 0.3333333333 -j X" },
        { "-m recent --name X --set -j Y", "-m recent --name X --rcheck -j Y" },
        { "-m recent --name X --rcheck --mask 255.255.0.0 -j Y", "-m recent --name X --rcheck -j Y" },
        { "-j MARK --or-mark 0x4000", "-j MARK --xor-mark 0x4000" },
        { "-m comment --comment \"a b\" -j X", "-m comment --comment \"a c\" -j X" },
        { "-m mark ! --mark 0x4000/0x4000 -j RETURN", "-m mark --mark 0x4000/0x4000 -j RETURN" },
        { "-j DNAT --to-destination 10.244.1.2:8080", "-j DNAT --to-destination 10.244.1.3:8080" },
        { "-p tcp -j REJECT", "-p tcp -j REJECT --reject-with tcp-reset" },
        { "-j REJECT", "-j DROP" },
        // The kernel keeps the order of the matches, and so does the canonical form.
        { "-m tcp -p tcp --dport 80 -m comment --comment x -j X", "-m comment --comment x -m tcp -p tcp --dport 80 -j X" },
    };

    [Theory]
    [MemberData(nameof(SameRule))]
    public void WrittenAndSaved_ReadAsOneRule(string written, string saved) =>
        Assert.Equal(CanonicalRule.Of(written), CanonicalRule.Of(saved));

    [Theory]
    [MemberData(nameof(DifferentRule))]
    public void DifferentRules_StayDifferent(string a, string b) =>
        Assert.NotEqual(CanonicalRule.Of(a), CanonicalRule.Of(b));

    /// <summary>Rules that take the reader's less-travelled paths: quotes and escapes, negations, second options, options after the target, masks.</summary>
    public static TheoryData<string> TrickyRules => new()
    {
        "",
        "-j RETURN",
        "! -s 10.0.0.0/8 ! -d 10.0.0.1 -i eth0 ! -o eth1+ -p tcp -j ACCEPT",
        "-s 10.0.0.1/255.255.0.0 -d 10.1.2.3/0.0.0.63 -j X",
        "-s 10.0.0.1/33 -d 10.0.0.1/abc -s 10.0.0.2 -j X",
        "-d fd00::1/64 -s ::ffff:10.0.0.1/128 -j X",
        "-d fd00::1/ffff:ffff:: -s fd00::1/::ff -j X",
        "-d not-an-address/8 -j X",
        "-m comment --comment \"a \\\"quoted\\\" word\" -m comment --comment \"\" -j X",
        "-m comment --comment \"unterminated -j X",
        "-m comment --comment\"joined\"-j X",
        "--dport 80 --sport 81 -m tcp --dport 82 -j X",
        "-j MARK --or-mark 0xZZ",
        "-j MARK --set-xmark 0x10/0x10/0x10",
        "-j MARK --set-xmark 16/0xff",
        "-j MARK --set-mark 0x4000",
        "-j MARK --xor-mark 0x4000 --or-mark 0x1",
        "! -j MARK --or-mark 0x4000",
        "-m statistic --mode random --probability 0.5 --probability 0.25 -j X",
        "-m statistic --mode random --probability NaN -j X",
        "-m statistic --mode random --probability 1e300 -j X",
        "-m recent --name X --rcheck --mask 4294967295 --rsource --rdest -j Y",
        "-m recent --name X --rcheck --mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff -j Y",
        "! -m recent --rsource -j Y",
        "-j REJECT --reject-with icmp-port-unreachable --reject-with tcp-reset",
        "-j DNAT --to-destination 10.0.0.1:80 -m comment --comment x -d 10.0.0.2",
        "-g KUBE-SVC-X",
        "-j",
        "-j A B",
        "-m",
        "-m a b -j X",
        "-s",
        "-p tcp -p udp -j X",
        "-m tcp ! --dport 80 ! --sport 81 -j X",
        "-m comment --comment \"é 𝄞\" -j X",
        "-m multiport --dports 80,443 -m set --match-set KUBE-X dst,dst -j ACCEPT",
    };

    [Theory]
    [MemberData(nameof(TrickyRules))]
    public void Read_SpellsTrickyRulesAsTheStringImplementation(string rule)
    {
        var reader = new CanonicalRule();
        reader.Read("-m a --z y -m b --y z -j MARK --or-mark 0x1"); // a longer rule first: its leftovers must not show
        Assert.Equal(Escape(ReferenceCanonicalRule.Of(rule)), Escape(reader.Read(rule).ToString()));
    }

    [Fact]
    public void Read_SpellsEveryGoldenRuleAsTheStringImplementation()
    {
        var reader = new CanonicalRule();
        var rules = 0;
        foreach (var file in Directory.GetFiles(RepoPaths.TestData, "*.golden", SearchOption.AllDirectories).Where(f => Path.GetFileName(f) is "iptables.golden" or "ipvs.golden"))
            foreach (var line in File.ReadLines(file))
            {
                if (!line.StartsWith("-A ", StringComparison.Ordinal) && !line.StartsWith("-I ", StringComparison.Ordinal)) continue;
                var words = line.Split(' ', line.StartsWith("-I ", StringComparison.Ordinal) ? 4 : 3);
                if (words.Length < 3) continue;
                var rule = words[^1];
                Assert.True(ReferenceCanonicalRule.Of(rule) == reader.Read(rule).ToString(), $"{file}: {rule}");
                rules++;
            }
        Assert.True(rules > 1000, $"only {rules} golden rules read");
    }

    /// <summary>Random rules from the words iptables-save prints (no stray word: the string implementation dropped its arguments), read by one reader in turn.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Read_SpellsRandomRulesAsTheStringImplementation(int seed)
    {
        string[] options = ["-s", "-d", "-i", "-o", "-p", "-m", "-j", "-g", "--dport", "--comment", "--probability", "--mask", "--rsource", "--or-mark", "--xor-mark", "--set-xmark", "--reject-with", "--to-destination", "--mode", "--name"];
        string[] args = ["10.0.0.1", "10.0.0.0/8", "fd00::7/128", "10.1.2.3/0.0.0.63", "tcp", "comment", "recent", "statistic", "MARK", "REJECT", "DNAT", "KUBE-SVC-X", "0x4000", "0x4000/0x4000", "0.3333333333", "255.255.255.255", "icmp-port-unreachable", "80", "random", "\"a b\"", "\"\"", "eth0+"];
        var random = new Random(seed);
        var reader = new CanonicalRule();
        for (var n = 0; n < 3000; n++)
        {
            var words = new List<string>();
            for (var o = random.Next(8); o >= 0; o--)
            {
                if (random.Next(5) == 0) words.Add("!");
                words.Add(options[random.Next(options.Length)]);
                for (var a = random.Next(3); a > 0; a--) words.Add(args[random.Next(args.Length)]);
            }
            var rule = string.Join(' ', words);
            Assert.True(ReferenceCanonicalRule.Of(rule) == reader.Read(rule).ToString(), $"seed {seed}: {rule}");
        }
    }

    /// <summary>A word that is no option is kept with its arguments and its "!" (the string implementation kept the word alone): never two rules read as one.</summary>
    [Theory]
    [InlineData("foo bar -j X", "foo baz -j X")]
    [InlineData("foo -j X", "! foo -j X")]
    [InlineData("! \"-s\" 10.0.0.1 -j X", "! \"-s\" 10.0.0.2 -j X")]
    public void StrayWord_KeepsItsArguments(string a, string b) =>
        Assert.NotEqual(CanonicalRule.Of(a), CanonicalRule.Of(b));

    /// <summary>The reader reuses its buffers: a rule without addresses costs no allocation once the buffers have grown, the digest neither.</summary>
    [Fact]
    public void Read_AllocatesNothingPerRule()
    {
        const string rule = "-m comment --comment \"ns/web:http -> 10.244.1.2:8080\" -m statistic --mode random --probability 0.33333333349 -m recent --name KUBE-SEP-X --rsource -j MARK --or-mark 0x4000";
        var reader = new CanonicalRule();
        var digests = new ChainDigests();
        digests.Declare("KUBE-SVC-X");
        var line = "-A KUBE-SVC-X " + rule;
        reader.Read(rule);
        digests.Line(line);
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 100; i++)
        {
            reader.Read(rule);
            digests.Line(line);
        }
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < 1000, $"{allocated} bytes allocated for 100 rules"); // was ~3 KB a rule
        Assert.Equal(101, digests[digests.IndexOf("KUBE-SVC-X")].Rules);
    }

    private static string Escape(string text) => text.Replace('\u0001', '|').Replace('\u0002', '#');
}
