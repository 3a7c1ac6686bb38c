using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Model;
using ProxyPlanes.Netlink;
using Errno = ProxyPlanes.Netlink.LinuxUapi.Errno;

namespace ProxyPlanes.Backends.Nftables;

/// <summary>
/// Sends the planner's transaction straight to the kernel as one NETLINK_NETFILTER batch (atomic,
/// like <c>nft -f</c>): tables, chains, rules (compiled by <see cref="NftNetlinkEncoding"/>), set and
/// map definitions, elements, flushes and deletes, without reading the table back (<c>nft</c> fetches
/// the whole table into its cache before every run: about 100 ms at 10,000 services, for one element).
/// Reads, and a transaction holding something the encoder does not know, go through
/// <see cref="NftCommandApplier"/>.
/// <para>
/// Encoding an element needs its set's key and value types. They come from what this applier has
/// already seen, never from a read per sync: the definitions of every set and map that passed through
/// it in an applied transaction (a full sync adds them all) and those a <see cref="ReadAsync"/> found.
/// Elements the planner wrote carry their set's types (<see cref="NftElement.Types"/>), which serve when
/// the definition has not been seen. Interval maps keyed by a 32-bit integer (the planner's
/// <c>endpoint-slots-*</c>) are encoded as nft 1.0.6 writes them: a range <c>LOW-HIGH</c> is a start
/// element (key LOW, big-endian, with the data) and a closing element (key HIGH + 1, flagged
/// interval end, no data) in one message; a delete deletes both; interval sets of addresses hold
/// prefixes the same way. A transaction touching a set it does not know, another interval set or a
/// type it cannot encode (<see cref="NfTablesDataType"/>) goes to nft. When the kernel refuses netlink itself (no CAP_NET_ADMIN: EPERM; no
/// nfnetlink: EPROTONOSUPPORT / EAFNOSUPPORT) the applier logs one line and uses nft from then on.
/// </para>
/// </summary>
public sealed class NftNetlinkApplier : INftablesApplier, IDisposable
{
    /// <summary>The environment variable that turns the netlink path off in the daemon (<c>nft</c>: every transaction through nft).</summary>
    public const string ApplierVariable = "PROXYPLANES_NFT_APPLIER";

    private readonly NftCommandApplier _nft;
    private readonly Func<NfTablesClient> _open;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly Dictionary<(IpFamily Family, string Table), Dictionary<string, SetTypes>> _definitions = [];
    private readonly HashSet<string> _explained = new(StringComparer.Ordinal);
    private NfTablesClient? _client;
    private string? _refusal;

    /// <param name="nft">The applier for everything that is not an element change (and for reads).</param>
    /// <param name="openClient">
    /// Opens the netlink socket (default: <see cref="NfTablesClient.Open"/> in the calling thread's
    /// namespace). Tests open it on a thread inside the namespace they made.
    /// </param>
    public NftNetlinkApplier(NftCommandApplier nft, ILogger? logger = null, Func<NfTablesClient>? openClient = null)
    {
        _nft = nft;
        _logger = logger ?? NullLogger.Instance;
        _open = openClient ?? NfTablesClient.Open;
    }

    /// <summary>How many transactions went over netlink and how many through nft (for tests and logs).</summary>
    public int NetlinkTransactions { get; private set; }

    public int NftTransactions { get; private set; }

    /// <summary>Why netlink is no longer used (null while it is).</summary>
    public string? Refusal => _refusal;

    public async Task<NftKernelState> ReadAsync(IpFamily family, string table, CancellationToken cancellationToken)
    {
        var state = await _nft.ReadAsync(family, table, cancellationToken).ConfigureAwait(false);
        lock (_gate)
        {
            var definitions = _definitions[(family, table)] = new Dictionary<string, SetTypes>(StringComparer.Ordinal);
            foreach (var set in state.Sets.Values) definitions[set.Name] = SetTypes.Of(set);
            foreach (var map in state.Maps.Values) definitions[map.Name] = SetTypes.Of(map);
        }
        return state;
    }

    public async Task ApplyAsync(NftTransaction transaction, CancellationToken cancellationToken)
    {
        if (transaction.IsEmpty) return;
        if (_refusal is null)
        {
            // Encoded while the batch is written: nothing of it is kept (see StreamedRequests).
            var requests = new StreamedRequests(transaction, NewEncoder(transaction));
            try
            {
                Send(transaction, requests);
                NetlinkTransactions++;
                Learn(transaction);
                return;
            }
            catch (NotEncodedException e)
            {
                // A transaction netlink cannot encode: said once per reason, then nft quietly does it.
                if (e.Reason is { } reason && _explained.Add(reason.Split(", e.g. ")[0]))
                    _logger.LogInformation("nftables transaction through nft, not netlink: {Reason}", reason);
            }
            catch (NetlinkException e) when (IsRefusalOfNetlink(e))
            {
                _refusal = e.Message;
                _logger.LogWarning("nftables over netlink refused ({Error}); using nft from now on", e.Message);
            }
            catch (ArgumentException e)
            {
                // Something the model accepts but a netlink message cannot hold: nft decides.
                if (_explained.Add(e.Message)) _logger.LogInformation("nftables transaction through nft, not netlink: {Reason}", e.Message);
            }
            catch (NetlinkException e)
            {
                var count = requests.Count;
                throw new NftException($"the kernel refused the {transaction.FamilyKeyword} transaction ({count} change{(count == 1 ? "" : "s")}), nothing applied: {e.Message}", e);
            }
        }
        await _nft.ApplyAsync(transaction, cancellationToken).ConfigureAwait(false);
        NftTransactions++;
        Learn(transaction);
    }

    /// <summary>How many canary checks (rule counts) went over netlink (for tests and logs).</summary>
    public int NetlinkReads { get; private set; }

    /// <summary>
    /// A GETRULE dump of that one chain over netlink (microseconds; <c>nft list chain</c> reads the
    /// whole table first); through nft once netlink was refused.
    /// </summary>
    public async Task<int> CountRulesAsync(IpFamily family, string table, string chain, CancellationToken cancellationToken)
    {
        if (_refusal is null)
        {
            try
            {
                lock (_gate)
                {
                    _client ??= _open();
                    var count = _client.CountRules(NftNetlinkEncoding.FamilyNumber(family), table, chain);
                    NetlinkReads++;
                    return count;
                }
            }
            catch (NetlinkException e) when (IsRefusalOfNetlink(e))
            {
                _refusal = e.Message;
                _logger.LogWarning("nftables over netlink refused ({Error}); using nft from now on", e.Message);
            }
            catch (NetlinkException e)
            {
                throw new NftException($"could not list chain {Nft.FamilyKeyword(family)} {table} {chain} over netlink: {e.Message}", e);
            }
        }
        return await _nft.CountRulesAsync(family, table, chain, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The netlink form of a transaction, built whole (tests, and what they check of the streamed
    /// form): one request per operation, in order (an element change is one request, a range two
    /// elements in it, three with an empty interval set's closing element at 0), each named by the nft command
    /// it carries out; or null when it must go through nft, with the reason (an object or rule not
    /// encoded here, a set whose types are unknown or cannot be encoded, a value it cannot write),
    /// null once netlink was refused. <see cref="ApplyAsync"/> makes the same requests one at a time
    /// while it writes the batch (<see cref="StreamedRequests"/>).
    /// </summary>
    internal EncodedTransaction? TryEncode(NftTransaction transaction, out string? reason)
    {
        reason = null;
        if (_refusal is not null) return null;
        var encoder = NewEncoder(transaction);
        var requests = new List<NetlinkRequest>(transaction.Operations.Count);
        var elements = new List<NfTablesElementOperation>();
        foreach (var operation in transaction.Operations)
        {
            if (encoder.Encode(operation) is not { } request)
            {
                reason = encoder.Reason;
                return null;
            }
            requests.Add(request);
            if (encoder.LastElement is { } element) elements.Add(element);
        }
        return new EncodedTransaction(requests, elements);
    }

    private TransactionEncoder NewEncoder(NftTransaction transaction)
    {
        lock (_gate)
        {
            return new TransactionEncoder(transaction, _definitions.TryGetValue((transaction.Family, transaction.Table), out var known)
                ? new Dictionary<string, SetTypes>(known, StringComparer.Ordinal)
                : new Dictionary<string, SetTypes>(StringComparer.Ordinal));
        }
    }

    /// <summary>
    /// Turns a transaction's operations, in order, into nf_tables requests, one each. Its state is what
    /// the transaction has done so far: the set and map definitions it added or deleted (on top of
    /// those known before it), the interval sets it emptied, the set ids it gave out.
    /// </summary>
    private sealed class TransactionEncoder(NftTransaction transaction, Dictionary<string, SetTypes> definitions)
    {
        private readonly byte _family = NftNetlinkEncoding.FamilyNumber(transaction.Family);
        private readonly string _prefix = $"{transaction.FamilyKeyword} {transaction.Table}";
        // Interval sets known to be empty here (added or flushed in this transaction): nft adds a closing
        // element at key 0 with the first elements it adds to one (older kernels' rbtree lookups needed
        // it), and so does this encoder, so both leave the same set.
        private readonly HashSet<string> _emptyIntervalSets = new(StringComparer.Ordinal);
        private uint _setId;

        /// <summary>Why the last <see cref="Encode"/> returned null.</summary>
        public string? Reason { get; private set; }

        /// <summary>The element change the last <see cref="Encode"/> made (null for any other operation).</summary>
        public NfTablesElementOperation? LastElement { get; private set; }

        public NetlinkRequest? Encode(NftOperation operation)
        {
            var (verb, obj) = operation;
            var table = transaction.Table;
            string? reason;
            LastElement = null;
            switch (obj, verb)
            {
                case (NftTable t, NftVerb.Add):
                    return NfTablesObjects.Table(_family, table, t.Comment);
                case (NftChain chain, NftVerb.Add):
                    return NfTablesObjects.Chain(_family, table, chain.Name, NftNetlinkEncoding.Hook(chain.Base), chain.Comment);
                case (NftChain chain, NftVerb.Flush):
                    return NfTablesObjects.FlushChain(_family, table, chain.Name);
                case (NftChain chain, NftVerb.Delete):
                    return NfTablesObjects.DeleteChain(_family, table, chain.Name);
                case (NftRule rule, NftVerb.Add):
                    if (NftNetlinkEncoding.Rule(transaction.Family, rule.Text, out reason) is { } expressions)
                        return NfTablesObjects.Rule(_family, table, rule.Chain, expressions, rule.Comment, rule.Text);
                    return Refuse(reason);
                case (NftSet or NftMap, NftVerb.Add):
                {
                    var name = SetName(obj);
                    var definition = obj is NftSet set ? NftNetlinkEncoding.Set(set, out reason) : NftNetlinkEncoding.Map((NftMap)obj, out reason);
                    if (definition is null) return Refuse($"{obj.Kind} {_prefix} {name}: {reason} is not encoded here");
                    var request = NfTablesObjects.Set(_family, table, definition, ++_setId, $"{obj.Kind} {_prefix} {name}");
                    var types = definitions[name] = obj is NftSet s ? SetTypes.Of(s) : SetTypes.Of((NftMap)obj);
                    if (types.IsInterval) _emptyIntervalSets.Add(name);
                    return request;
                }
                case (NftSet or NftMap, NftVerb.Flush):
                    if (definitions.GetValueOrDefault(SetName(obj))?.IsInterval == true) _emptyIntervalSets.Add(SetName(obj));
                    return NfTablesObjects.FlushSet(_family, table, SetName(obj), obj.Kind);
                case (NftSet or NftMap, NftVerb.Delete):
                    definitions.Remove(SetName(obj));
                    return NfTablesObjects.DeleteSet(_family, table, SetName(obj), obj.Kind);
                case (NftElement element, NftVerb.Add or NftVerb.Delete):
                {
                    if (EncodeElement(element, verb == NftVerb.Add, definitions.GetValueOrDefault(element.Set), _prefix, out reason) is not { } encoded) return Refuse(reason);
                    var change = new NfTablesElementOperation(verb == NftVerb.Add ? NfTablesElementChange.Add : NfTablesElementChange.Delete, element.Set, encoded)
                    {
                        ClosingElementAtZero = verb == NftVerb.Add && _emptyIntervalSets.Remove(element.Set) && encoded.Key.AsSpan().ContainsAnyExcept((byte)0),
                    };
                    LastElement = change;
                    return NfTablesMessages.SetElement(_family, table, change);
                }
                default:
                    return Refuse($"{verb.ToString().ToLowerInvariant()} {obj.Kind} is not encoded here");
            }
        }

        private NetlinkRequest? Refuse(string? reason)
        {
            Reason = reason;
            return null;
        }
    }

    /// <summary>
    /// A transaction's requests made one at a time while the socket writes the batch, so that a full
    /// sync never holds them all (tens of thousands of requests with their compiled expressions: the
    /// largest part of a cold sync's peak before). The socket reads them in order, each once (twice when
    /// its message starts a new chunk), and after the send only the one the kernel refused, to name
    /// it: that one is encoded again (by the same encoder, whose state no longer matters then: the
    /// transaction is refused). An operation the encoder cannot encode throws
    /// <see cref="NotEncodedException"/> before anything was sent.
    /// </summary>
    private sealed class StreamedRequests(NftTransaction transaction, TransactionEncoder encoder) : IReadOnlyList<NetlinkRequest>
    {
        private int _index = -1;
        private NetlinkRequest? _current;

        public int Count => transaction.Operations.Count;

        public NetlinkRequest this[int index]
        {
            get
            {
                if (index == _index) return _current!;
                if (index == _index + 1)
                {
                    _current = encoder.Encode(transaction.Operations[index]) ?? throw new NotEncodedException(encoder.Reason);
                    _index = index;
                    return _current;
                }
                // The request the kernel refused, asked for its name after the send.
                var (verb, obj) = transaction.Operations[index];
                return encoder.Encode(transaction.Operations[index]) ??
                       new NetlinkRequest(0, 0, (ref NetlinkWriter _) => { }, $"nftables {verb.ToString().ToLowerInvariant()} {obj.Kind} {transaction.FamilyKeyword} {transaction.Table} (change {index + 1})");
            }
        }

        public IEnumerator<NetlinkRequest> GetEnumerator()
        {
            for (var i = 0; i < Count; i++) yield return this[i];
        }

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }

    /// <summary>An operation met while streaming that netlink cannot carry: the transaction goes through nft (nothing was sent).</summary>
    private sealed class NotEncodedException(string? reason) : Exception(reason ?? "not encoded")
    {
        public string? Reason => reason;
    }

    private static string SetName(NftObject obj) => obj is NftSet set ? set.Name : ((NftMap)obj).Name;

    /// <summary>One element: its set's types from the definitions known (else those the element carries), then the key and value.</summary>
    private static NfTablesElement? EncodeElement(NftElement element, bool add, SetTypes? known, string prefix, out string? reason)
    {
        reason = null;
        var types = known ?? (element.Types is { } carried ? SetTypes.Of(carried) : null);
        if (types is null)
        {
            reason = $"the definition of {prefix} {element.Set} is not known";
            return null;
        }
        if (types.Key is null)
        {
            reason = $"{prefix} {element.Set} is {types.Unsupported}";
            return null;
        }
        var encoded = Encode(element, types, add);
        if (encoded is null) reason = $"cannot encode an element of {prefix} {element.Set} ({types.Description}), e.g. {element}";
        return encoded;
    }

    /// <summary>Test shorthand: the encoded element changes, or null.</summary>
    internal IReadOnlyList<NfTablesElementOperation>? TryEncode(NftTransaction transaction) => TryEncode(transaction, out _)?.Elements;

    /// <summary>
    /// One element as nft sends it. Made in one <see cref="NfTablesElement"/>, without splitting the key or value
    /// text into strings: a full sync encodes every element of the table (50,000 at 10,000 services × 2
    /// endpoints, 500,000 at 50,000 × 5).
    /// </summary>
    private static NfTablesElement? Encode(NftElement element, SetTypes types, bool add)
    {
        byte[]? key, endKey = null;
        var open = false;
        if (types.IsInterval)
        {
            if (!TryEncodeRange(element, types.Key![0], out key, out endKey, out open)) return null;
        }
        else if ((key = NfTablesDataType.TryEncode(types.Key!, element.Key, out _)) is null) return null;
        // A deleted element is named by its key (and a range's closing key); it carries no value, comment or flags.
        if (!add) return new NfTablesElement(key, element.KeyText) { IntervalEndKey = endKey };
        NfTablesVerdict? verdict = null;
        byte[]? data = null;
        if (types.IsVerdictMap)
        {
            if (element.Value is null || !NfTablesVerdict.TryParse(element.Value, out var parsed)) return null;
            verdict = parsed;
        }
        else if (types.Value is { } valueTypes)
        {
            if (element.Value is null) return null;
            data = NfTablesDataType.TryEncodeConcatenation(valueTypes, element.Value);
            if (data is null) return null;
        }
        else if (element.Value is not null) return null;
        return new NfTablesElement(key, element.KeyText) { IntervalEndKey = endKey, IntervalOpen = open, Comment = element.Comment, Verdict = verdict, Data = data };
    }

    /// <summary>
    /// A key <c>LOW-HIGH</c> or <c>N</c> of an interval map keyed by a 32-bit integer: the start element
    /// (LOW) and the closing key HIGH + 1, or, for a range ending at 2^32 − 1, an open interval (nft
    /// sends no closing element then). nft also adds a closing element at key 0 when it adds to an
    /// empty set (older kernels' rbtree needed it); the kernel's lookup does not, and the element is
    /// invisible in listings, so it is not sent here.
    /// </summary>
    private static bool TryEncodeRange(NftElement element, NfTablesDataType keyType, [NotNullWhen(true)] out byte[]? start, out byte[]? end, out bool open)
    {
        (start, end, open) = (null, null, false);
        if (element.Key.Count != 1) return false;
        var text = element.Key[0];
        if (keyType.Name != "integer") return TryEncodeAddressRange(text, keyType, out start, out end, out open);
        var dash = text.IndexOf('-', StringComparison.Ordinal);
        var lowText = dash < 0 ? text.AsSpan() : text.AsSpan(0, dash);
        var highText = dash < 0 ? text.AsSpan() : text.AsSpan(dash + 1);
        if (keyType.Length != sizeof(uint) ||
            !uint.TryParse(lowText, NumberStyles.None, CultureInfo.InvariantCulture, out var low) ||
            !uint.TryParse(highText, NumberStyles.None, CultureInfo.InvariantCulture, out var high) || high < low) return false;
        // Big-endian, as the integer type writes an interval key (see NfTablesDataType).
        start = new byte[sizeof(uint)];
        BinaryPrimitives.WriteUInt32BigEndian(start, low);
        if (high == uint.MaxValue)
        {
            open = true;
            return true;
        }
        end = new byte[sizeof(uint)];
        BinaryPrimitives.WriteUInt32BigEndian(end, high + 1);
        return true;
    }

    /// <summary>
    /// A prefix <c>ADDRESS/LENGTH</c>, a range <c>LOW-HIGH</c> or an address of an interval set of
    /// addresses, as nft sends it: the first address, and a closing element at the address after the
    /// last (none, and the interval open, when the last is all ones).
    /// </summary>
    private static bool TryEncodeAddressRange(string text, NfTablesDataType keyType, [NotNullWhen(true)] out byte[]? start, out byte[]? end, out bool open)
    {
        (end, open) = (null, false);
        start = new byte[keyType.Length];
        var last = new byte[keyType.Length];
        var slash = text.IndexOf('/', StringComparison.Ordinal);
        var dash = text.IndexOf('-', StringComparison.Ordinal);
        if (slash >= 0)
        {
            if (!keyType.TryEncode(text.AsSpan(0, slash), start) ||
                !int.TryParse(text.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var bits) || bits > keyType.Length * 8) return false;
            for (var i = 0; i < start.Length; i++)
            {
                var hostBits = Math.Clamp((i + 1) * 8 - bits, 0, 8);
                var hostMask = (byte)((1 << hostBits) - 1);
                if ((start[i] & hostMask) != 0) return false; // nft refuses a prefix with host bits set
                last[i] = (byte)(start[i] | hostMask);
            }
        }
        else if (!keyType.TryEncode(dash < 0 ? text : text.AsSpan(0, dash), start) || !keyType.TryEncode(dash < 0 ? text : text.AsSpan(dash + 1), last) ||
                 last.AsSpan().SequenceCompareTo(start) < 0) return false;
        // The closing key: the address after the last (last is not used again, so it becomes it).
        for (var i = last.Length - 1; i >= 0; i--)
            if (++last[i] != 0)
            {
                end = last;
                return true;
            }
        open = true;
        return true;
    }

    private void Send(NftTransaction transaction, IReadOnlyList<NetlinkRequest> requests)
    {
        var count = requests.Count;
        var description = $"nftables batch of {count} change{(count == 1 ? "" : "s")} in {transaction.FamilyKeyword} {transaction.Table}";
        lock (_gate)
        {
            _client ??= _open();
            _client.Apply(requests, description);
            // A full sync's batch: how its time splits between us (encoding, writing) and the kernel.
            if (count >= LogBatchesFrom && _client.LastBatch is { } batch)
                _logger.LogInformation("{Description}: {Bytes:F1} MiB in {Chunks} chunks, encoded and written in {Write:F0} ms, applied and committed by the kernel in {Kernel:F0} ms",
                    description, batch.Bytes / 1048576.0, batch.Chunks, batch.WriteTime.TotalMilliseconds, batch.KernelTime.TotalMilliseconds);
        }
    }

    /// <summary>Batches of at least this many changes (full syncs at scale) are logged with their time split.</summary>
    private const int LogBatchesFrom = 10_000;

    /// <summary>Netlink itself is unusable here (not the transaction's content): nothing was applied, nft may still work.</summary>
    private static bool IsRefusalOfNetlink(NetlinkException e) =>
        e.Errno is Errno.EPERM or Errno.EPROTONOSUPPORT or Errno.EAFNOSUPPORT &&
        (e.Operation.StartsWith("nftables batch of ", StringComparison.Ordinal) || e.Operation.StartsWith("nftables list chain ", StringComparison.Ordinal) ||
         !e.Operation.StartsWith("nftables ", StringComparison.Ordinal));

    /// <summary>Remembers the set and map definitions an applied transaction created or removed.</summary>
    internal void Learn(NftTransaction transaction)
    {
        lock (_gate)
        {
            var tableKey = (transaction.Family, transaction.Table);
            foreach (var (verb, obj) in transaction.Operations)
            {
                switch (obj)
                {
                    case NftTable when verb == NftVerb.Delete:
                        _definitions.Remove(tableKey);
                        break;
                    case NftTable when verb == NftVerb.Add:
                        _definitions.TryAdd(tableKey, new Dictionary<string, SetTypes>(StringComparer.Ordinal));
                        break;
                    case NftSet set:
                        Update(tableKey, set.Name, verb, verb == NftVerb.Add ? SetTypes.Of(set) : null);
                        break;
                    case NftMap map:
                        Update(tableKey, map.Name, verb, verb == NftVerb.Add ? SetTypes.Of(map) : null);
                        break;
                }
            }
        }
    }

    private void Update((IpFamily, string) tableKey, string name, NftVerb verb, SetTypes? types)
    {
        if (verb == NftVerb.Flush) return;
        if (!_definitions.TryGetValue(tableKey, out var definitions)) _definitions[tableKey] = definitions = new Dictionary<string, SetTypes>(StringComparer.Ordinal);
        if (types is null) definitions.Remove(name);
        else definitions[name] = types;
    }

    /// <summary>A transaction as netlink requests, and its element changes among them.</summary>
    internal sealed record EncodedTransaction(IReadOnlyList<NetlinkRequest> Requests, IReadOnlyList<NfTablesElementOperation> Elements);

    public void Dispose()
    {
        lock (_gate)
        {
            _client?.Dispose();
            _client = null;
        }
    }

    /// <summary>
    /// What encoding a set's elements needs: the key's types (null when one cannot be encoded, or the
    /// set holds intervals), and for a map its value types or that it maps to verdicts.
    /// </summary>
    private sealed record SetTypes(IReadOnlyList<NfTablesDataType>? Key, IReadOnlyList<NfTablesDataType>? Value, bool IsVerdictMap, string Description)
    {
        /// <summary>Keys are ranges of a 32-bit integer (the only interval sets encoded here).</summary>
        public bool IsInterval { get; init; }

        public static SetTypes Of(NftElementTypes types) =>
            Make(types.Key, types.Interval ? new EquatableArray<string>(["interval"]) : EquatableArray<string>.Empty, types.Value,
                types.Value is null ? string.Join(" . ", types.Key) : $"{string.Join(" . ", types.Key)} : {types.Value}");

        /// <summary>Why the elements cannot be encoded, when <see cref="Key"/> is null.</summary>
        public string Unsupported { get; init; } = "";

        public static SetTypes Of(NftSet set) => Make(set.Type, set.Flags, null, string.Join(" . ", set.Type));

        public static SetTypes Of(NftMap map) => Make(map.Type, map.Flags, map.ValueType, $"{string.Join(" . ", map.Type)} : {map.ValueType}");

        private static SetTypes Make(EquatableArray<string> keyTypes, EquatableArray<string> flags, string? valueType, string description)
        {
            var interval = flags.Contains("interval");
            // An integer key is host byte order outside interval sets (not encoded here); in an interval map nft writes it big-endian.
            // Interval sets of one address type hold prefixes (and ranges) of addresses.
            if (interval ? !(keyTypes.Count == 1 && keyTypes[0] is "integer" or "ipv4_addr" or "ipv6_addr") : keyTypes.Count == 1 && keyTypes[0] == "integer")
                return new(null, null, false, description)
                {
                    Unsupported = interval
                        ? "an interval set not keyed by a 32-bit integer or an address (nft writes its ranges itself)"
                        : $"of a type netlink cannot encode here ({description})",
                };
            var key = Types(keyTypes);
            if (key is null) return new(null, null, false, description) { Unsupported = $"of a type netlink cannot encode here ({description})" };
            if (valueType is null) return new(key, null, false, description) { IsInterval = interval };
            if (valueType == "verdict") return new(key, null, true, description) { IsInterval = interval };
            var value = Types(valueType.Split('.', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries));
            return value is null
                ? new(null, null, false, description) { Unsupported = $"of a type netlink cannot encode here ({description})" }
                : new(key, value, false, description) { IsInterval = interval };
        }

        private static IReadOnlyList<NfTablesDataType>? Types(IEnumerable<string> names)
        {
            var types = new List<NfTablesDataType>();
            foreach (var name in names)
            {
                if (!NfTablesDataType.TryGet(name, out var type)) return null;
                types.Add(type);
            }
            return types.Count == 0 ? null : types;
        }
    }
}
