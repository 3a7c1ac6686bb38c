using System.Text;

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
}
