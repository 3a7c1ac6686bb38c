using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;
using ProxyPlanes.Sandbox;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// The checking fake (<see cref="FakeIptables"/>) against the real iptables-restore --noflush of
/// both variants, in a fresh network namespace per case: each script is accepted by both or
/// refused by both, and afterwards both hold the same chains and rules (so a refusal left the
/// table as it was in both, and a table committed before the refused line stayed in both).
/// Rules are written as iptables-save prints them, so the texts compare as they are.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class FakeIptablesKernelTests
{
    private const string Chains = "*filter\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n-A INPUT -j KUBE-A\n-A KUBE-A -j KUBE-B\n-A KUBE-B -s 10.0.0.1/32 -j DROP\nCOMMIT\n";
    private const string EmptyReferenced = "*filter\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n-A KUBE-A -j KUBE-B\nCOMMIT\n";
    private const string NotEmpty = "*filter\n:KUBE-C - [0:0]\n-A KUBE-C -j DROP\nCOMMIT\n";

    /// <summary>(case, what the node holds first, the script tested, whether the kernel takes it).</summary>
    public static readonly TheoryData<string, string, string, bool> Scripts = new()
    {
        { "chains-and-jumps", "", Chains, true },
        { "jump-to-undeclared-chain", "", "*filter\n:KUBE-A - [0:0]\n-A KUBE-A -j KUBE-MISSING\nCOMMIT\n", false },
        { "rule-in-undeclared-chain", "", "*filter\n-A KUBE-NOPE -j DROP\nCOMMIT\n", false },
        { "delete-referenced-chain", EmptyReferenced, "*filter\n-X KUBE-B\nCOMMIT\n", false },
        { "delete-chain-with-rules", NotEmpty, "*filter\n-X KUBE-C\nCOMMIT\n", false },
        { "noflush-declaration-flushes-then-delete", NotEmpty, "*filter\n:KUBE-C - [0:0]\n-X KUBE-C\nCOMMIT\n", true },
        { "delete-missing-rule", "*filter\n:KUBE-A - [0:0]\nCOMMIT\n", "*filter\n-D INPUT -j KUBE-A\nCOMMIT\n", false },
        { "delete-jumps-then-chains", Chains, "*filter\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n-D INPUT -j KUBE-A\n-X KUBE-A\n-X KUBE-B\nCOMMIT\n", true },
        { "refused-table-keeps-old-rules", Chains, "*filter\n:KUBE-A - [0:0]\n-A KUBE-A -j ACCEPT\n-A KUBE-A -j KUBE-MISSING\nCOMMIT\n", false },
        { "table-committed-before-refusal-stays", "", "*nat\n:KUBE-N - [0:0]\n-A KUBE-N -j RETURN\nCOMMIT\n*filter\n-A KUBE-NOPE -j DROP\nCOMMIT\n", false },
        { "dnat-in-filter", "", "*filter\n:KUBE-D - [0:0]\n-A KUBE-D -p tcp -j DNAT --to-destination 10.0.0.1:80\nCOMMIT\n", false },
        { "chain-name-too-long", "", "*filter\n:KUBE-SVC-ABCDEFGHIJKLMNOPQRST - [0:0]\nCOMMIT\n", false },
        { "noflush-keeps-built-in-rules", Chains, "*filter\n:INPUT ACCEPT [0:0]\n:KUBE-B - [0:0]\nCOMMIT\n", true },
        { "no-commit", "", "*filter\n:KUBE-E - [0:0]\n", false },
        { "insert-at-top", Chains, "*filter\n:KUBE-F - [0:0]\n-I INPUT 1 -j KUBE-F\nCOMMIT\n", true },
    };

    public static IEnumerable<object[]> Cases() =>
        from row in Scripts
        from variant in new[] { IptablesVariant.Nft, IptablesVariant.Legacy }
        select new object[] { row[0], variant };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Restore_FakeAndKernel_AcceptAndRefuseAlikeAndHoldTheSameRules(string caseName, IptablesVariant variant)
    {
        var row = Scripts.Single(r => (string)r[0] == caseName);
        var (setup, script, kernelAccepts) = ((string)row[1], (string)row[2], (bool)row[3]);
        using var ns = NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-fipt");
        var real = new IptablesCommandApplier(variant, IpFamily.IPv4, ["ip", "netns", "exec", ns.Name]);
        var fake = new FakeIptables(IpFamily.IPv4, variant);
        if (setup.Length > 0)
        {
            await real.RestoreAsync(setup, default);
            fake.Restore(setup);
        }

        var realError = await RefusalAsync(() => real.RestoreAsync(script, default));
        var fakeError = await RefusalAsync(() => fake.RestoreAsync(script, default));

        // Positive control: the real tool does what the case says, so the comparison means something.
        Assert.True(kernelAccepts == (realError is null), $"{variant} iptables-restore: expected {(kernelAccepts ? "accepted" : "refused")}, got {realError ?? "accepted"}");
        Assert.True((realError is null) == (fakeError is null), $"kernel: {realError ?? "accepted"}; fake: {fakeError ?? "accepted"}");
        foreach (var table in new[] { "filter", "nat" })
            Assert.Equal(Normalize(await real.SaveAsync(table, default)), Normalize(fake.Save(table)));
    }

    [Theory]
    [InlineData(IptablesVariant.Nft)]
    [InlineData(IptablesVariant.Legacy)]
    public async Task ListChain_FakeAndKernel_PrintTheSameRules_AndNullForAMissingChain(IptablesVariant variant)
    {
        using var ns = NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-fipt");
        var real = new IptablesCommandApplier(variant, IpFamily.IPv4, ["ip", "netns", "exec", ns.Name]);
        var fake = new FakeIptables(IpFamily.IPv4, variant);
        await real.RestoreAsync(Chains, default);
        fake.Restore(Chains);

        foreach (var chain in new[] { "KUBE-A", "KUBE-B" })
        {
            var listed = await real.ListChainAsync("filter", chain, default);
            Assert.Contains($"-A {chain} ", listed); // positive control: the real listing has the rule
            Assert.Equal(listed, await fake.ListChainAsync("filter", chain, default));
        }
        Assert.Null(await real.ListChainAsync("filter", "KUBE-MISSING", default));
        Assert.Null(await fake.ListChainAsync("filter", "KUBE-MISSING", default));
        Assert.Null(await real.ListChainAsync("nat", "KUBE-A", default));
        Assert.Null(await fake.ListChainAsync("nat", "KUBE-A", default));
    }

    private static async Task<string?> RefusalAsync(Func<Task> restore)
    {
        try
        {
            await restore();
            return null;
        }
        catch (CommandException e)
        {
            return e.Message;
        }
    }

    /// <summary>User chains and non-empty built-in chains with their rules (a table iptables-nft never created prints nothing).</summary>
    private static List<string> Normalize(string save) =>
        IptablesSave.ParseTables(save)
            .SelectMany(t => t.Rules.Where(c => t.Policies[c.Key] == "-" || c.Value.Count > 0)
                .Select(c => $"{t.Name} {c.Key}: {string.Join(" | ", c.Value)}"))
            .Order(StringComparer.Ordinal).ToList();
}
