using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Backends.Iptables.Tests;
using ProxyPlanes.Model;
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

    /// <summary>
    /// The kernel refuses a rule that jumps to a chain that does not exist, in the middle of a
    /// transaction that also adds a chain, a set and an element: nothing of it stays (the ruleset
    /// lists as before), and the error names that rule. So is a rule that closes a loop (the kernel
    /// names it: ELOOP, or EMLINK from its chain-depth check). Positive control: the transaction with a
    /// good rule instead applies.
    /// </summary>
    [Fact]
    public async Task RefusedTransaction_LeavesTheOldRuleset_AndNamesTheRule()
    {
        using var ns = CreateNamespace("gerr");
        using var netlink = NetlinkApplier(ns);
        var (initial, _) = await new GoldenCase("nodeport").SyncRequestsAsync();
        await netlink.ApplyAsync(new NftablesPlanner(IpFamily.IPv4).Plan(initial, null, null).Transaction, default);
        var before = await RulesetAsync(ns);

        NftTransaction Transaction(string rule) => new NftTransaction(IpFamily.IPv4, NftNames.Table)
            .Add(new NftChain("extra"))
            .Add(new NftSet("extra-ports") { Type = new(["inet_service"]) })
            .Add(new NftElement("extra-ports", "8080"))
            .Add(new NftRule("extra", rule))
            .Add(new NftRule("extra", "tcp dport @extra-ports accept"));

        var missing = await Assert.ThrowsAsync<NftException>(() => netlink.ApplyAsync(Transaction("ip daddr 10.96.0.99 jump no-such-chain"), default));
        output.WriteLine(missing.Message);
        Assert.Contains("nothing applied: nftables add rule ip proxyplanes extra ip daddr 10.96.0.99 jump no-such-chain: No such file or directory (ENOENT)", missing.Message);
        Assert.Equal(before, await RulesetAsync(ns));

        // services jumps here, so a jump back to services is a loop: found when the kernel commits.
        var loop = Transaction("jump services").Add(new NftRule(NftNames.Services, "ip daddr 10.96.0.98 jump extra"));
        var looped = await Assert.ThrowsAsync<NftException>(() => netlink.ApplyAsync(loop, default));
        output.WriteLine(looped.Message);
        Assert.Contains("nothing applied: nftables", looped.Message);
        Assert.Matches("ELOOP|EMLINK", looped.Message);
        Assert.Equal(before, await RulesetAsync(ns));
        Assert.Equal((1, 0), (netlink.NetlinkTransactions, netlink.NftTransactions));

        await netlink.ApplyAsync(Transaction("ip daddr 10.96.0.99 jump mark-for-masquerade"), default);
        var after = await RulesetAsync(ns);
        Assert.Contains("ip daddr 10.96.0.99 jump mark-for-masquerade", after);
        Assert.Contains("elements = { 8080 }", after);
    }
}

[CollectionDefinition(Name)]
public sealed class NftNetlinkKernelCollection
{
    public const string Name = "nftables netlink rulesets";
}
