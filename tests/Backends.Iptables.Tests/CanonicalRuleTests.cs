using ProxyPlanes.Iptables;

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
}
