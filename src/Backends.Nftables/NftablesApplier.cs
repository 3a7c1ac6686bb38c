using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Backends.Nftables;

/// <summary>
/// The only part of the nftables data plane that touches the kernel. It receives typed
/// transactions, so a netlink implementation can replace the <c>nft</c> process without any
/// change to the planner.
/// </summary>
public interface INftablesApplier
{
    /// <summary>The objects (no rules, no elements) of <paramref name="table"/> in <paramref name="family"/>; empty when there is no such table.</summary>
    Task<NftKernelState> ReadAsync(IpFamily family, string table, CancellationToken cancellationToken);

    /// <summary>Applies the whole transaction atomically, or nothing (throws <see cref="NftException"/>).</summary>
    Task ApplyAsync(NftTransaction transaction, CancellationToken cancellationToken);

    /// <summary>
    /// How many rules one chain holds: 0 when the table or the chain does not exist (the canary check,
    /// at every periodic sync). Reads that chain only, or as little more as the tool allows.
    /// </summary>
    Task<int> CountRulesAsync(IpFamily family, string table, string chain, CancellationToken cancellationToken);
}

/// <summary>
/// Runs <c>nft</c>: <c>nft -f -</c> with the transaction's text (one atomic kernel transaction), and
/// <c>nft -j -t list …</c> to read what a table holds.
/// </summary>
public sealed class NftCommandApplier : INftablesApplier
{
    private readonly string[] _prefix;

    /// <param name="commandPrefix">
    /// Test only: a command that runs <c>nft</c> elsewhere, e.g. <c>["ip", "netns", "exec", NAME]</c>
    /// to program a network namespace the test created. The proxy itself runs nft in its own
    /// namespace (empty prefix).
    /// </param>
    public NftCommandApplier(IReadOnlyList<string>? commandPrefix = null) => _prefix = [.. commandPrefix ?? []];

    public async Task<NftKernelState> ReadAsync(IpFamily family, string table, CancellationToken cancellationToken)
    {
        var result = await RunAsync(["-j", "-t", NftKernelState.ListCommand(family)], null, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
            throw new NftException($"nft could not list the {Nft.FamilyKeyword(family)} tables (exit {result.ExitCode}): {ExternalCommand.FirstLines(result.StandardError, 5)}");
        return NftKernelState.ParseJson(result.StandardOutput, family, table);
    }

    public async Task ApplyAsync(NftTransaction transaction, CancellationToken cancellationToken)
    {
        if (transaction.IsEmpty) return;
        var result = await RunAsync(["-f", "-"], transaction, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
            throw new NftException($"nft -f refused the {Nft.FamilyKeyword(transaction.Family)} transaction (exit {result.ExitCode}): {ExternalCommand.FirstLines(result.StandardError, 6)}");
    }

    /// <summary><c>nft list chain</c>: nft 1.0.6 reads the whole table into its cache first (about 250 ms at 10,000 services).</summary>
    public async Task<int> CountRulesAsync(IpFamily family, string table, string chain, CancellationToken cancellationToken)
    {
        var result = await RunAsync(["list", "chain", Nft.FamilyKeyword(family), table, chain], null, cancellationToken).ConfigureAwait(false);
        // nft says "No such file or directory" for a missing table or chain.
        if (!result.Succeeded && result.StandardError.Contains("No such file or directory", StringComparison.Ordinal)) return 0;
        if (!result.Succeeded)
            throw new NftException($"nft could not list chain {Nft.FamilyKeyword(family)} {table} {chain} (exit {result.ExitCode}): {ExternalCommand.FirstLines(result.StandardError, 5)}");
        return ParseChainRules(result.StandardOutput).Count;
    }

    /// <summary>
    /// The rules in <c>nft list chain</c> output: the lines inside the chain's braces, without
    /// the chain's own <c>type … hook …</c> and <c>comment</c> lines.
    /// </summary>
    public static IReadOnlyList<string> ParseChainRules(string listing)
    {
        var rules = new List<string>();
        var depth = 0;
        foreach (var raw in listing.Split('\n'))
        {
            var line = raw.Trim();
            if (line.EndsWith('{')) { depth++; continue; }
            if (line == "}") { depth--; continue; }
            if (depth != 2 || line.Length == 0) continue; // table { chain { rules } }
            if (line.StartsWith("type ", StringComparison.Ordinal) || line.StartsWith("comment ", StringComparison.Ordinal)) continue;
            rules.Add(line);
        }
        return rules;
    }

    /// <summary>Whether nft runs and the kernel has nf_tables for <paramref name="family"/> (checked without changing anything).</summary>
    public async Task<bool> IsAvailableAsync(IpFamily family, CancellationToken cancellationToken)
    {
        try
        {
            var probe = new NftTransaction(family, NftNames.Table + "-probe").Add(new NftTable());
            var result = await RunAsync(["--check", "-f", "-"], probe, cancellationToken).ConfigureAwait(false);
            return result.Succeeded;
        }
        catch (NftException)
        {
            return false;
        }
    }

    // The transaction is streamed to nft's stdin: a full sync's script is never built as one string.
    private async Task<CommandResult> RunAsync(IEnumerable<string> arguments, NftTransaction? input, CancellationToken cancellationToken)
    {
        var args = new List<string>(_prefix.Skip(1));
        if (_prefix.Length > 0) args.Add("nft");
        args.AddRange(arguments);
        try
        {
            return await ExternalCommand.RunWithInputAsync(_prefix.Length > 0 ? _prefix[0] : "nft", args, input is null ? null : input.WriteToAsync, timeout: null, cancellationToken).ConfigureAwait(false);
        }
        catch (CommandException e)
        {
            throw new NftException(e.Message, e);
        }
    }
}
