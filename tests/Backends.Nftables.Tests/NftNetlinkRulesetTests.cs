using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Backends.Iptables.Tests;
using ProxyPlanes.Netlink;
using ProxyPlanes.Sandbox;

namespace ProxyPlanes.Backends.Nftables.Tests;

/// <summary>
/// Whole transactions (tables, chains, rules, sets, maps, flushes, deletes) over netlink against
/// the kernel: the planner's transaction of every golden case, applied through <c>nft -f</c> in one
/// fresh namespace and as one netlink batch in another, lists back the same ruleset, both as nft
/// prints it and as the kernel's expressions (<c>nft --debug=netlink list ruleset</c>); so does the
/// partial sync after it. A batch the kernel refuses leaves the old ruleset and names the object.
/// </summary>
[Collection(NftNetlinkKernelCollection.Name)]
public sealed partial class NftNetlinkRulesetTests(Xunit.Abstractions.ITestOutputHelper output)
{
    public static IEnumerable<object[]> Cases() => GoldenCase.All();

    private static NetworkNamespace CreateNamespace(string suffix) => NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-{suffix}");

    private static NftNetlinkApplier NetlinkApplier(NetworkNamespace ns) =>
        new(new NftCommandApplier(["ip", "netns", "exec", ns.Name]), NullLogger.Instance, () => ns.Run(NfTablesClient.Open));

    /// <summary>The ruleset as nft prints it, and the kernel's expressions of every rule, set and element, without handles.</summary>
    private static async Task<string> RulesetAsync(NetworkNamespace ns)
    {
        var text = (await ns.CheckedExecAsync(["nft", "list", "ruleset"], TimeSpan.FromSeconds(60))).StandardOutput;
        var expressions = (await ns.CheckedExecAsync(["nft", "--debug=netlink", "list", "ruleset"], TimeSpan.FromSeconds(60))).StandardOutput;
        // Rule handles go; a hash set's elements come in the order of its (random) hash seed: sorted.
        var lines = new List<string>();
        var elements = new List<string>();
        foreach (var line in RuleHandles().Replace(expressions, "$1").Split('\n'))
        {
            if (line.StartsWith("\telement ", StringComparison.Ordinal))
            {
                elements.Add(line);
                continue;
            }
            lines.AddRange(elements.Order(StringComparer.Ordinal));
            elements.Clear();
            lines.Add(line);
        }
        lines.AddRange(elements.Order(StringComparer.Ordinal));
        return text + "\n" + string.Join('\n', lines);
    }

    [GeneratedRegex(@"(?m)^((?:ip6?|inet) \S+ \S+)(?: \d+)+$")]
    private static partial Regex RuleHandles();

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task GoldenCase_FullAndPartialSync_ByNetlinkAndByNft_ListTheSameRuleset(string caseName)
    {
        var golden = new GoldenCase(caseName);
        var (initial, update) = await golden.SyncRequestsAsync();
        using var viaNft = CreateNamespace("gnft");
        using var viaNetlink = CreateNamespace("gnl");
        var nft = new NftCommandApplier(["ip", "netns", "exec", viaNft.Name]);
        using var netlink = NetlinkApplier(viaNetlink);
        var families = NftablesPlannerGoldenTests.FamiliesOf(initial).ToList();

        var planners = families.Select(f => new NftablesPlanner(f)).ToList();
        var firsts = new List<NftPlan>();
        foreach (var planner in planners)
        {
            var plan = planner.Plan(initial, previous: null, kernel: null);
            firsts.Add(plan);
            await nft.ApplyAsync(plan.Transaction, default);
            await netlink.ApplyAsync(plan.Transaction, default);
        }
        Assert.Equal((families.Count, 0), (netlink.NetlinkTransactions, netlink.NftTransactions));
        var listing = await RulesetAsync(viaNetlink);
        Assert.Contains("table ip proxyplanes", listing);
        Assert.Equal(await RulesetAsync(viaNft), listing);

        if (update is null) return;
        for (var i = 0; i < planners.Count; i++)
        {
            var plan = planners[i].Plan(update, firsts[i].State, kernel: null);
            await nft.ApplyAsync(plan.Transaction, default);
            await netlink.ApplyAsync(plan.Transaction, default);
        }
        output.WriteLine($"{netlink.NetlinkTransactions} over netlink, {netlink.NftTransactions} through nft");
        Assert.Equal(0, netlink.NftTransactions);
        Assert.Equal(await RulesetAsync(viaNft), await RulesetAsync(viaNetlink));
    }
}

[CollectionDefinition(Name)]
public sealed class NftNetlinkKernelCollection
{
    public const string Name = "nftables netlink rulesets";
}
