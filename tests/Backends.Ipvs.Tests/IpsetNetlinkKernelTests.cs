using System.Text.RegularExpressions;
using ProxyPlanes.Model;
using ProxyPlanes.Netlink.Tests;

namespace ProxyPlanes.Backends.Ipvs.Tests;

/// <summary>
/// A partial sync's ipset changes go over netlink (IpsetClient) instead of <c>ipset restore</c>: in two
/// namespaces of this host, the same scripts (entries of every set type this mode uses, both families,
/// comments, a comment replaced, deletes of present and absent entries) applied by netlink in one and
/// by the process in the other leave the same <c>ipset save</c>.
/// </summary>
[Collection(IpvsKernelCollection.Name)]
public sealed class IpsetNetlinkKernelTests
{
    private static readonly IpFamily[] Families = [IpFamily.IPv4, IpFamily.IPv6];

    /// <summary>One entry per set and family, of the set's type, as the planner writes them.</summary>
    private static List<IpsetEntry> Entries(int n)
    {
        var entries = new List<IpsetEntry>();
        foreach (var definition in IpvsNames.Sets)
            foreach (var family in Families)
            {
                var (ip, ip2, net) = family == IpFamily.IPv4
                    ? ($"10.96.0.{n}", $"10.244.1.{n}", $"203.0.{n}.0/24")
                    : ($"fd00:10:96::{n}", $"fd00:10:244::{n}", $"2001:db8:{n}::/64");
                var entry = definition.Type switch
                {
                    "bitmap:port" => $"{30000 + n}",
                    "hash:ip" => ip,
                    "hash:ip,port" => $"{ip},{(n % 3 == 0 ? "sctp" : n % 2 == 0 ? "udp" : "tcp")}:{80 + n}",
                    "hash:ip,port,ip" => $"{ip},tcp:{80 + n},{ip2}",
                    "hash:ip,port,net" => $"{ip},tcp:{80 + n},{net}",
                    _ => throw new InvalidOperationException(definition.Type),
                };
                if (definition.EntryComments) entry = IpsetDefinition.WithComment(entry, $"ns/svc{n}:http");
                entries.Add(new IpsetEntry(definition.Name(family), entry));
            }
        return entries;
    }

    private static string Adds(IEnumerable<IpsetEntry> entries) => string.Concat(entries.Select(e => $"add {e.Set} {e.Entry} -exist\n"));

    private static string Dels(IEnumerable<IpsetEntry> entries) => string.Concat(entries.Select(e => $"del {e.Set} {IpsetDefinition.KeyOf(e.Entry)} -exist\n"));

    /// <summary><c>ipset save</c>, sorted, without each hash set's random <c>initval</c>.</summary>
    private static async Task<List<string>> SaveAsync(TestNamespace ns) =>
        (await ns.ExecAsync("ipset", "save")).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => Regex.Replace(l, " initval 0x[0-9a-f]+", "")).Order(StringComparer.Ordinal).ToList();

    [Fact]
    public async Task PartialSyncEntryChanges_OverNetlink_EqualIpsetRestore()
    {
        using var viaNetlink = new TestNamespace("ipvs");
        using var viaProcess = new TestNamespace("ipvs");
        using var netlink = new IpvsKernel(new IpvsKernelOptions { CommandPrefix = ["ip", "netns", "exec", viaNetlink.Name], InNamespace = a => viaNetlink.Namespace.Run(a) });
        // A command prefix without InNamespace: the netlink socket would not be in the tools' namespace, so always the process.
        using var process = new IpvsKernel(new IpvsKernelOptions { CommandPrefix = ["ip", "netns", "exec", viaProcess.Name] });
        var creates = string.Concat(IpvsNames.Sets.SelectMany(d => Families.Select(f => d.CreateLine(f) + "\n")));
        var first = Entries(1).Concat(Entries(2)).Concat(Entries(3)).ToList();
        var renamed = Entries(2).Where(e => e.Set.EndsWith("NAMES", StringComparison.Ordinal))
            .Select(e => e with { Entry = IpsetDefinition.WithComment(IpsetDefinition.KeyOf(e.Entry), "other/owner:https") }).ToList();
        IpsetRestore[] scripts =
        [
            new(creates),
            new(Adds(first)),
            // A comment replaced (add -exist), entries deleted, absent ones deleted (no error with -exist), one added again.
            new(Adds(renamed) + Dels(Entries(1)) + Dels(Entries(4)) + Adds(Entries(5))),
        ];

        foreach (var kernel in new[] { netlink, process })
            await kernel.ApplyAsync(scripts, default);

        var expected = await SaveAsync(viaProcess);
        Assert.Equal(expected, await SaveAsync(viaNetlink));
        // Positive control: the entries are there (sets of 2, 3, 5 with 2's comment replaced), and netlink did the two entry scripts.
        Assert.Equal(IpvsNames.Sets.Length * Families.Length * 3, expected.Count(l => l.StartsWith("add ", StringComparison.Ordinal)));
        Assert.Contains(expected, l => l.Contains("comment \"other/owner:https\"", StringComparison.Ordinal));
        Assert.DoesNotContain(expected, l => l.Contains("ns/svc1:http", StringComparison.Ordinal) || l.Contains("ns/svc2:http", StringComparison.Ordinal));
        Assert.Equal(2, netlink.IpsetScriptsOverNetlink);
        Assert.Equal(0, process.IpsetScriptsOverNetlink);
    }

    [Fact]
    public async Task EntryTheKernelRefuses_FailsWithIpsetRestoresError_NetlinkStaysInUse()
    {
        using var ns = new TestNamespace("ipvs");
        using var kernel = new IpvsKernel(new IpvsKernelOptions { CommandPrefix = ["ip", "netns", "exec", ns.Name], InNamespace = a => ns.Namespace.Run(a) });
        await kernel.ApplyAsync([new IpsetRestore(IpvsNames.ClusterIP.CreateLine(IpFamily.IPv4) + "\n")], default);

        // An IPv6 entry in an IPv4 set: netlink refuses it, then ipset restore says why.
        var refused = await Assert.ThrowsAsync<IpvsKernelException>(() =>
            kernel.ApplyAsync([new IpsetRestore("add KUBE-CLUSTER-IP fd00::1,tcp:80 -exist\n")], default));
        Assert.Contains("ipset restore", refused.Message, StringComparison.Ordinal);
        Assert.Equal(0, kernel.IpsetScriptsOverNetlink);

        // Positive control: a good entry afterwards still goes over netlink and is there.
        await kernel.ApplyAsync([new IpsetRestore("add KUBE-CLUSTER-IP 10.96.0.10,tcp:80 -exist\n")], default);
        Assert.Equal(1, kernel.IpsetScriptsOverNetlink);
        Assert.Contains("add KUBE-CLUSTER-IP 10.96.0.10,tcp:80", await ns.ExecAsync("ipset", "save"), StringComparison.Ordinal);
    }
}
