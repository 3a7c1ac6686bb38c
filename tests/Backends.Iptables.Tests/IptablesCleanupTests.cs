using System.Text;
using ProxyPlanes.Iptables;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Iptables.Tests;

public sealed class IptablesCleanupTests
{
    [Fact]
    public void AppendCleanup_JumpPresentTwice_DeletesBothCopiesBeforeTheChain()
    {
        const string save = """
            *filter
            :INPUT ACCEPT [0:0]
            :KUBE-EXTERNAL-SERVICES - [0:0]
            -A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
            -A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
            -A INPUT -s 198.51.100.7/32 -j DROP
            COMMIT
            """;
        var script = new StringBuilder();

        IptablesBackend.AppendCleanup(script, "filter", save);

        var lines = script.ToString().Split('\n');
        Assert.Equal(2, lines.Count(l => l.StartsWith("-D INPUT", StringComparison.Ordinal) && l.EndsWith("-j KUBE-EXTERNAL-SERVICES", StringComparison.Ordinal)));
        Assert.DoesNotContain(lines, l => l.Contains("198.51.100.7", StringComparison.Ordinal));
        Assert.True(Array.FindLastIndex(lines, l => l.StartsWith("-D ", StringComparison.Ordinal)) < Array.IndexOf(lines, "-X KUBE-EXTERNAL-SERVICES"));
    }

    /// <summary>
    /// The cleanup written into a <see cref="RestoreScript"/> (the backend's, never one string) is the text the
    /// <see cref="StringBuilder"/> overload gives, byte for byte as UTF-8: owned chains sorted, declared (flushed), the
    /// jumps into them deleted (a comment outside ASCII kept as it was), the chains deleted; foreign chains untouched.
    /// </summary>
    [Fact]
    public async Task AppendCleanupAsync_IntoARestoreScript_IsTheStringBuildersText()
    {
        var fake = new FakeIptables(IpFamily.IPv4, IptablesVariant.Legacy);
        await fake.RestoreAsync("""
            *nat
            :KUBE-SVC-B - [0:0]
            :KUBE-SVC-A - [0:0]
            :KUBE-SERVICES - [0:0]
            :DOCKER - [0:0]
            -A PREROUTING -m comment --comment "café 🚀" -j KUBE-SERVICES
            -A KUBE-SERVICES -j KUBE-SVC-A
            -A DOCKER -j RETURN
            COMMIT

            """, default);
        const string expected = """
            *nat
            :KUBE-SERVICES - [0:0]
            :KUBE-SVC-A - [0:0]
            :KUBE-SVC-B - [0:0]
            -D PREROUTING -m comment --comment "café 🚀" -j KUBE-SERVICES
            -X KUBE-SERVICES
            -X KUBE-SVC-A
            -X KUBE-SVC-B
            COMMIT

            """;
        static bool Owned(string chain) => chain.StartsWith("KUBE-", StringComparison.Ordinal);
        var script = new RestoreScript();
        var text = new StringBuilder();

        await IptablesCleanup.AppendCleanupAsync(script, "nat", fake, Owned, default);
        await IptablesCleanup.AppendCleanupAsync(text, "nat", fake, Owned, default);

        Assert.Equal(expected, script.ToString());
        Assert.Equal(Encoding.UTF8.GetByteCount(expected), script.Length);
        Assert.Equal(expected, text.ToString());
    }
}
