using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using static ProxyPlanes.Netlink.LinuxUapi.NfTables;

namespace ProxyPlanes.Netlink;

/// <summary>A verdict as a verdict map's element holds it: accept, drop, return, continue, or jump/goto a chain.</summary>
public readonly record struct NfTablesVerdict(int Code, string? Chain = null)
{
    public static NfTablesVerdict Accept => new(LinuxUapi.Netfilter.NF_ACCEPT);
    public static NfTablesVerdict Drop => new(LinuxUapi.Netfilter.NF_DROP);
    public static NfTablesVerdict Return => new(NFT_RETURN);
    public static NfTablesVerdict Continue => new(NFT_CONTINUE);
    public static NfTablesVerdict Jump(string chain) => new(NFT_JUMP, chain);
    public static NfTablesVerdict Goto(string chain) => new(NFT_GOTO, chain);

    /// <summary>nft's words (<c>accept</c>, <c>drop</c>, <c>return</c>, <c>continue</c>, <c>jump C</c>, <c>goto C</c>); false for anything else.</summary>
    public static bool TryParse(string text, out NfTablesVerdict verdict)
    {
        // Words split on spaces, as text.Split(' ', RemoveEmptyEntries) would, without making them (one per element of a full sync).
        var words = text.AsSpan().Trim(' ');
        var space = words.IndexOf(' ');
        var first = space < 0 ? words : words[..space];
        var rest = space < 0 ? [] : words[space..].TrimStart(' ');
        (var parsed, verdict) = rest.IsEmpty
            ? first switch
            {
                "accept" => (true, Accept),
                "drop" => (true, Drop),
                "return" => (true, Return),
                "continue" => (true, Continue),
                _ => (false, default(NfTablesVerdict)),
            }
            : rest.Contains(' ') ? (false, default(NfTablesVerdict)) : first switch
            {
                "jump" => (true, Jump(rest.ToString())),
                "goto" => (true, Goto(rest.ToString())),
                _ => (false, default(NfTablesVerdict)),
            };
        return parsed;
    }

    public override string ToString() => Code switch
    {
        LinuxUapi.Netfilter.NF_ACCEPT => "accept",
        LinuxUapi.Netfilter.NF_DROP => "drop",
        NFT_RETURN => "return",
        NFT_CONTINUE => "continue",
        NFT_JUMP => $"jump {Chain}",
        NFT_GOTO => $"goto {Chain}",
        _ => $"verdict {Code}",
    };
}

/// <summary>
/// One element of a set or map, encoded: the key's bytes (a concatenation's fields each padded to 4
/// bytes), for a map either data bytes or a verdict, and nft's element comment. <see cref="Text"/>
/// names the element in errors (<c>10.96.0.10 . tcp . 80</c>).
/// </summary>
public sealed record NfTablesElement(byte[] Key, string Text)
{
    /// <summary>A data map's value (<c>NFTA_DATA_VALUE</c>).</summary>
    public byte[]? Data { get; init; }

    /// <summary>A verdict map's value (<c>NFTA_DATA_VERDICT</c>).</summary>
    public NfTablesVerdict? Verdict { get; init; }

    /// <summary>The comment nft shows after the key; stored as nft stores it, in the element's user data.</summary>
    public string? Comment { get; init; }

    /// <summary>A per-element timeout (sets with <c>flags timeout</c>); null takes the set's default.</summary>
    public TimeSpan? Timeout { get; init; }

    /// <summary>The element closing an interval (NFT_SET_ELEM_INTERVAL_END), as nft writes interval sets.</summary>
    public bool IntervalEnd { get; init; }

    /// <summary>
    /// For a range <c>LOW-HIGH</c> of an interval set (<see cref="Key"/> = LOW): HIGH + 1, the key of
    /// the element that closes it. It goes in the same message right after this one, flagged
    /// NFT_SET_ELEM_INTERVAL_END and without data, as nft 1.0.6 writes an rbtree interval set.
    /// </summary>
    public byte[]? IntervalEndKey { get; init; }

    /// <summary>
    /// A range that ends at the key type's maximum: no closing element exists (HIGH + 1 overflows), so,
    /// as nft does, the start element carries NFTNL_SET_ELEM_F_INTERVAL_OPEN in its user data.
    /// </summary>
    public bool IntervalOpen { get; init; }
}

public enum NfTablesElementChange { Add, Delete }

/// <summary>An element added to, or deleted from, the set or map <see cref="Set"/>.</summary>
public sealed record NfTablesElementOperation(NfTablesElementChange Change, string Set, NfTablesElement Element)
{
    /// <summary>
    /// Adds a closing element at key 0 (all zero bytes, <c>NFT_SET_ELEM_INTERVAL_END</c>) before the
    /// element, in the same message: what nft sends with the first elements it adds to an empty
    /// interval set.
    /// </summary>
    public bool ClosingElementAtZero { get; init; }
}

/// <summary>
/// nf_tables messages (include/uapi/linux/netfilter/nf_tables.h) as nft 1.0 / libnftnl write them:
/// NFT_MSG_NEWSETELEM / NFT_MSG_DELSETELEM with NFTA_SET_ELEM_LIST_TABLE, _SET and _ELEMENTS.
/// </summary>
public static class NfTablesMessages
{
    /// <summary>NFTNL_UDATA_SET_ELEM_COMMENT: the user-data TLV type nft gives an element's comment.</summary>
    public const byte ElementCommentUserDataType = 0;

    /// <summary>NFTNL_UDATA_SET_ELEM_FLAGS: the user-data TLV type of an element's flags (a host-order u32).</summary>
    public const byte ElementFlagsUserDataType = 1;

    /// <summary>NFTNL_SET_ELEM_F_INTERVAL_OPEN: a range with no closing element (it ends at the key's maximum).</summary>
    public const uint ElementFlagIntervalOpen = 1;

    /// <summary>The longest comment nft takes (NFTNL_UDATA_COMMENT_MAXLEN), in UTF-8 bytes without the NUL it stores after it.</summary>
    public const int CommentMaxBytes = 128;

    /// <summary>The nfnetlink message type of an nf_tables message.</summary>
    public static ushort MessageType(ushort nftMessage) => (ushort)((LinuxUapi.Nfnetlink.NFNL_SUBSYS_NFTABLES << 8) | nftMessage);

    /// <summary>nft's name of a netfilter family: <c>ip</c>, <c>ip6</c>, <c>inet</c>.</summary>
    public static string FamilyKeyword(byte family) => family switch
    {
        LinuxUapi.Netfilter.NFPROTO_IPV4 => "ip",
        LinuxUapi.Netfilter.NFPROTO_IPV6 => "ip6",
        LinuxUapi.Netfilter.NFPROTO_INET => "inet",
        _ => $"family {family}",
    };

    /// <summary>
    /// One element change as a request of a batch, named as nft would write it:
    /// <c>nftables add element ip proxyplanes service-ips { 10.96.0.10 . tcp . 80 }</c>. An add
    /// carries NLM_F_CREATE (as <c>nft add element</c>: an element already there with the same
    /// value is no error).
    /// </summary>
    public static NetlinkRequest SetElement(byte family, string table, NfTablesElementOperation operation)
    {
        ValidateName(table, "table");
        ValidateName(operation.Set, "set");
        var element = operation.Element;
        if (element.Comment is { } comment && (Encoding.UTF8.GetByteCount(comment) > CommentMaxBytes || comment.Contains('\0')))
            throw new ArgumentException($"element {element.Text}: comment longer than {CommentMaxBytes} bytes, or with a NUL", nameof(operation));
        if (element.Data is not null && element.Verdict is not null)
            throw new ArgumentException($"element {element.Text}: both data and a verdict", nameof(operation));
        var add = operation.Change == NfTablesElementChange.Add;
        var verb = add ? "add" : "delete";
        return new NetlinkRequest(
            MessageType(add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM),
            add ? LinuxUapi.Netlink.NLM_F_CREATE : (ushort)0,
            (ref NetlinkWriter writer) => WriteSetElement(ref writer, family, table, operation),
            () => $"nftables {verb} element {FamilyKeyword(family)} {table} {operation.Set} {{ {element.Text} }}");
    }

    /// <summary>The body of a NEWSETELEM / DELSETELEM message (after the nlmsghdr): nfgenmsg and attributes.</summary>
    public static void WriteSetElement(ref NetlinkWriter writer, byte family, string table, NfTablesElementOperation operation)
    {
        var element = operation.Element;
        writer.WriteNetfilterHeader(family, 0);
        writer.PutString(NFTA_SET_ELEM_LIST_TABLE, table);
        writer.PutString(NFTA_SET_ELEM_LIST_SET, operation.Set);
        var elements = writer.BeginNested(NFTA_SET_ELEM_LIST_ELEMENTS);
        if (operation.ClosingElementAtZero)
        {
            Span<byte> zero = stackalloc byte[element.Key.Length];
            zero.Clear();
            WriteClosingElement(ref writer, zero);
        }
        WriteElement(ref writer, element, operation.Change == NfTablesElementChange.Add);
        if (element.IntervalEndKey is { } endKey) WriteClosingElement(ref writer, endKey);
        writer.EndNested(elements);
    }

    /// <summary>
    /// The NFTA_LIST_ELEM closing an interval: NFT_SET_ELEM_INTERVAL_END and the key, nothing else (what
    /// <see cref="WriteElement"/> writes for such an element), without making one per range of a full sync.
    /// </summary>
    private static void WriteClosingElement(ref NetlinkWriter writer, scoped ReadOnlySpan<byte> key)
    {
        var item = writer.BeginNested(NFTA_LIST_ELEM);
        writer.PutBigEndianU32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
        var nested = writer.BeginNested(NFTA_SET_ELEM_KEY);
        writer.PutBytes(NFTA_DATA_VALUE, key);
        writer.EndNested(nested);
        writer.EndNested(item);
    }

    /// <summary>One NFTA_LIST_ELEM, attributes in libnftnl's order: flags, timeout, key, data, user data.</summary>
    private static void WriteElement(ref NetlinkWriter writer, NfTablesElement element, bool add)
    {
        var item = writer.BeginNested(NFTA_LIST_ELEM);
        if (element.IntervalEnd) writer.PutBigEndianU32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
        if (add && element.Timeout is { } timeout) writer.PutBigEndianU64(NFTA_SET_ELEM_TIMEOUT, (ulong)timeout.TotalMilliseconds);
        var key = writer.BeginNested(NFTA_SET_ELEM_KEY);
        writer.PutBytes(NFTA_DATA_VALUE, element.Key);
        writer.EndNested(key);
        if (add)
        {
            if (element.Data is { } data)
            {
                var value = writer.BeginNested(NFTA_SET_ELEM_DATA);
                writer.PutBytes(NFTA_DATA_VALUE, data);
                writer.EndNested(value);
            }
            else if (element.Verdict is { } verdict)
            {
                WriteVerdict(ref writer, NFTA_SET_ELEM_DATA, verdict);
            }
            if (element.Comment is not null || element.IntervalOpen)
            {
                // libnftnl's user data: TLVs of u8 type, u8 length, value; the comment (with its NUL) first, then the flags.
                Span<byte> userData = stackalloc byte[3 + CommentMaxBytes + 6];
                var length = 0;
                if (element.Comment is { } comment)
                {
                    var written = Encoding.UTF8.GetBytes(comment, userData[2..]);
                    userData[2 + written] = 0;
                    userData[0] = ElementCommentUserDataType;
                    userData[1] = (byte)(written + 1);
                    length = written + 3;
                }
                if (element.IntervalOpen)
                {
                    userData[length] = ElementFlagsUserDataType;
                    userData[length + 1] = 4;
                    BitConverter.TryWriteBytes(userData[(length + 2)..], ElementFlagIntervalOpen);
                    length += 6;
                }
                writer.PutBytes(NFTA_SET_ELEM_USERDATA, userData[..length]);
            }
        }
        writer.EndNested(item);
    }

    /// <summary>An attribute holding NFTA_DATA_VERDICT: the verdict's code and, for jump and goto, its chain.</summary>
    internal static void WriteVerdict(ref NetlinkWriter writer, ushort type, NfTablesVerdict verdict)
    {
        var value = writer.BeginNested(type);
        var nested = writer.BeginNested(NFTA_DATA_VERDICT);
        writer.PutBigEndianU32(NFTA_VERDICT_CODE, unchecked((uint)verdict.Code));
        if (verdict.Chain is { } chain) writer.PutString(NFTA_VERDICT_CHAIN, chain);
        writer.EndNested(nested);
        writer.EndNested(value);
    }

    internal static void ValidateName(string name, string what)
    {
        if (name.Length == 0 || Encoding.UTF8.GetByteCount(name) >= NFT_NAME_MAXLEN || name.Contains('\0'))
            throw new ArgumentException($"invalid nf_tables {what} name '{name}'");
    }
}

/// <summary>
/// An nf_tables data type as nft names it (<c>nft describe</c>), with how a value of it is written in
/// a set key or map data: its length and byte order. Only fixed-length types are known here.
/// </summary>
public sealed class NfTablesDataType
{
    /// <summary>Writes a value given in nft's notation; false when it is not a value of the type.</summary>
    private delegate bool Encoder(ReadOnlySpan<char> text, Span<byte> bytes);

    private readonly Encoder _encode;

    private NfTablesDataType(string name, int length, Encoder encode)
    {
        Name = name;
        Length = length;
        _encode = encode;
    }

    public string Name { get; }

    /// <summary>Bytes of a value (unpadded).</summary>
    public int Length { get; }

    private static readonly Dictionary<string, NfTablesDataType> Known = new[]
    {
        new NfTablesDataType("ipv4_addr", 4, (text, bytes) => EncodeAddress(text, AddressFamily.InterNetwork, bytes)),
        new NfTablesDataType("ipv6_addr", 16, (text, bytes) => EncodeAddress(text, AddressFamily.InterNetworkV6, bytes)),
        new NfTablesDataType("inet_proto", 1, EncodeProtocol),
        new NfTablesDataType("inet_service", 2, (text, bytes) =>
            ushort.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var port) && BinaryPrimitives.TryWriteUInt16BigEndian(bytes, port)),
        // Marks are host byte order in nft (meta mark, ct mark).
        new NfTablesDataType("mark", 4, (text, bytes) => TryParseU32(text, out var mark) && BitConverter.TryWriteBytes(bytes, mark)),
        new NfTablesDataType("ether_addr", 6, EncodeEther),
        // A 32-bit integer as nft writes it into an interval map's key (e.g. typeof numgen random mod N):
        // big-endian, because the rbtree compares keys bytewise; nft's rule turns numgen's host-order
        // result around (byteorder hton) before the lookup. Elsewhere nft keeps such keys in host order,
        // so an encoder takes this type for interval keys only.
        new NfTablesDataType("integer", 4, (text, bytes) => TryParseU32(text, out var value) && BinaryPrimitives.TryWriteUInt32BigEndian(bytes, value)),
    }.ToDictionary(t => t.Name, StringComparer.Ordinal);

    /// <summary>The type named <paramref name="name"/>; false for types this encoder does not know (e.g. <c>ifname</c>, <c>integer</c>).</summary>
    public static bool TryGet(string name, out NfTablesDataType type) => Known.TryGetValue(name, out type!);

    /// <summary>Writes <paramref name="text"/> (nft's notation) into the first <see cref="Length"/> bytes; false when it is not a value of this type.</summary>
    public bool TryEncode(string text, Span<byte> destination) => TryEncode(text.AsSpan(), destination);

    /// <inheritdoc cref="TryEncode(string, Span{byte})"/>
    public bool TryEncode(ReadOnlySpan<char> text, Span<byte> destination) => destination.Length >= Length && _encode(text, destination[..Length]);

    /// <summary>The padded length of a key or data of <paramref name="types"/>: one type unpadded, a concatenation with each field rounded up to 4 bytes.</summary>
    public static int ConcatenationLength(IReadOnlyList<NfTablesDataType> types) =>
        types.Count == 1 ? types[0].Length : types.Sum(t => NetlinkWriter.NetlinkAlign(t.Length));

    /// <summary>
    /// Encodes the parts of a key or data, one per type, as nft does: one type unpadded; a
    /// concatenation with each field padded to 4 bytes. Returns null and says why when a part is not a
    /// value of its type or the counts differ.
    /// </summary>
    public static byte[]? TryEncode(IReadOnlyList<NfTablesDataType> types, IReadOnlyList<string> parts, out string? error)
    {
        if (types.Count != parts.Count || types.Count == 0)
        {
            error = $"{parts.Count} fields for {types.Count} types ({string.Join(" . ", types.Select(t => t.Name))})";
            return null;
        }
        var bytes = new byte[ConcatenationLength(types)];
        var offset = 0;
        for (var i = 0; i < types.Count; i++)
        {
            if (!types[i].TryEncode(parts[i], bytes.AsSpan(offset)))
            {
                error = $"'{parts[i]}' is not a {types[i].Name}";
                return null;
            }
            offset += types.Count == 1 ? types[i].Length : NetlinkWriter.NetlinkAlign(types[i].Length);
        }
        if (bytes.Length > NFT_DATA_VALUE_MAXLEN)
        {
            error = $"{bytes.Length} bytes, more than a set key holds ({NFT_DATA_VALUE_MAXLEN})";
            return null;
        }
        error = null;
        return bytes;
    }

    /// <summary>
    /// <see cref="TryEncode(IReadOnlyList{NfTablesDataType}, IReadOnlyList{string}, out string?)"/> of a value as nft
    /// writes it, the parts joined with <c>" . "</c> (<c>10.244.1.2 . 8080</c>; each part trimmed), without splitting
    /// it into strings (a full sync encodes hundreds of thousands); null when it is not a value of
    /// <paramref name="types"/>.
    /// </summary>
    public static byte[]? TryEncodeConcatenation(IReadOnlyList<NfTablesDataType> types, ReadOnlySpan<char> text)
    {
        if (types.Count == 0) return null;
        var length = ConcatenationLength(types);
        if (length > NFT_DATA_VALUE_MAXLEN) return null;
        Span<byte> bytes = stackalloc byte[length];
        bytes.Clear();
        var offset = 0;
        var rest = text;
        for (var i = 0; i < types.Count; i++)
        {
            ReadOnlySpan<char> part;
            var separator = rest.IndexOf(" . ", StringComparison.Ordinal);
            if (i == types.Count - 1)
            {
                if (separator >= 0) return null; // more parts than types
                part = rest;
            }
            else
            {
                if (separator < 0) return null; // fewer parts than types
                part = rest[..separator];
                rest = rest[(separator + 3)..];
            }
            if (!types[i].TryEncode(part.Trim(), bytes[offset..])) return null;
            offset += types.Count == 1 ? types[i].Length : NetlinkWriter.NetlinkAlign(types[i].Length);
        }
        return bytes.ToArray();
    }

    private static bool EncodeAddress(ReadOnlySpan<char> text, AddressFamily family, Span<byte> bytes) =>
        !text.Contains('/') && !text.Contains('%') && IPAddress.TryParse(text, out var address) && address.AddressFamily == family &&
        address.TryWriteBytes(bytes, out _);

    private static readonly Dictionary<string, byte> Protocols = new(StringComparer.Ordinal)
    {
        ["icmp"] = 1, ["igmp"] = 2, ["tcp"] = 6, ["udp"] = 17, ["dccp"] = 33, ["gre"] = 47, ["esp"] = 50, ["ah"] = 51,
        ["icmpv6"] = 58, ["sctp"] = 132, ["udplite"] = 136,
    };

    private static readonly Dictionary<string, byte>.AlternateLookup<ReadOnlySpan<char>> ProtocolsBySpan = Protocols.GetAlternateLookup<ReadOnlySpan<char>>();

    private static bool EncodeProtocol(ReadOnlySpan<char> text, Span<byte> bytes)
    {
        if (ProtocolsBySpan.TryGetValue(text, out var protocol) || byte.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out protocol))
        {
            bytes[0] = protocol;
            return true;
        }
        return false;
    }

    private static bool TryParseU32(ReadOnlySpan<char> text, out uint value) =>
        text.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? uint.TryParse(text[2..], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value)
            : uint.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out value);

    private static bool EncodeEther(ReadOnlySpan<char> text, Span<byte> bytes)
    {
        var rest = text;
        for (var i = 0; i < 6; i++)
        {
            var colon = rest.IndexOf(':');
            if ((colon < 0) != (i == 5)) return false; // exactly six parts
            var part = colon < 0 ? rest : rest[..colon];
            if (part.Length is 0 or > 2 || !byte.TryParse(part, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out bytes[i])) return false;
            rest = colon < 0 ? [] : rest[(colon + 1)..];
        }
        return true;
    }
}

/// <summary>
/// nf_tables over a NETLINK_NETFILTER socket, in the network namespace of the thread that opened it.
/// Element changes go as one atomic batch without reading anything back (unlike <c>nft</c>, which
/// first fetches the table into its cache).
/// </summary>
public sealed class NfTablesClient : IDisposable
{
    private readonly NetlinkSocket _socket;

    private NfTablesClient(NetlinkSocket socket) => _socket = socket;

    /// <summary>Opens a NETLINK_NETFILTER socket in the calling thread's network namespace.</summary>
    public static NfTablesClient Open() => new(NetlinkSocket.Open(LinuxUapi.Netlink.NETLINK_NETFILTER));

    /// <summary>
    /// Applies element adds and deletes to sets and maps of <paramref name="table"/> as one
    /// transaction: all or nothing. A refusal throws <see cref="NetlinkException"/> naming the first
    /// element the kernel refused (<c>nftables delete element ip proxyplanes service-ips { 10.96.0.10 . tcp . 80 }:
    /// No such file or directory (ENOENT)</c>), or the batch when the kernel refused it as a whole.
    /// </summary>
    public void ApplyElements(byte family, string table, IReadOnlyList<NfTablesElementOperation> operations)
    {
        if (operations.Count == 0) return;
        var requests = new NetlinkRequest[operations.Count];
        for (var i = 0; i < operations.Count; i++) requests[i] = NfTablesMessages.SetElement(family, table, operations[i]);
        _socket.ExecuteNetfilterBatch(LinuxUapi.Nfnetlink.NFNL_SUBSYS_NFTABLES, requests,
            $"nftables batch of {operations.Count} element change{(operations.Count == 1 ? "" : "s")} in {NfTablesMessages.FamilyKeyword(family)} {table}");
    }

    /// <summary>
    /// Applies any nf_tables requests (<see cref="NfTablesObjects"/>, <see cref="NfTablesMessages.SetElement"/>) as
    /// one transaction: all or nothing; a refusal names the first request the kernel refused, with its
    /// extended ACK text, or the batch (<paramref name="description"/>) when its commit failed.
    /// </summary>
    public void Apply(IReadOnlyList<NetlinkRequest> requests, string description)
    {
        if (requests.Count == 0) return;
        _socket.ExecuteNetfilterBatch(LinuxUapi.Nfnetlink.NFNL_SUBSYS_NFTABLES, requests, description);
    }

    /// <summary>The last batch <see cref="Apply"/> or <see cref="ApplyElements"/> sent that the kernel answered: sizes, our time, the kernel's.</summary>
    public NetfilterBatchStats? LastBatch => _socket.LastNetfilterBatch;

    /// <summary>
    /// How many rules <paramref name="chain"/> of <paramref name="table"/> holds: a GETRULE dump that
    /// names the table and the chain, so the kernel walks that chain only (nft would fetch the whole
    /// table first). 0 when the table or the chain does not exist (the kernel's dump is then empty).
    /// Rules of other chains, which a kernel without the dump filter would send, are not counted.
    /// </summary>
    public int CountRules(byte family, string table, string chain)
    {
        NfTablesMessages.ValidateName(table, "table");
        NfTablesMessages.ValidateName(chain, "chain");
        var rules = _socket.Dump(new NetlinkRequest(NfTablesMessages.MessageType(LinuxUapi.NfTables.NFT_MSG_GETRULE), 0, (ref NetlinkWriter w) =>
        {
            w.WriteNetfilterHeader(family, 0);
            w.PutString(LinuxUapi.NfTables.NFTA_RULE_TABLE, table);
            w.PutString(LinuxUapi.NfTables.NFTA_RULE_CHAIN, chain);
        }, $"nftables list chain {NfTablesMessages.FamilyKeyword(family)} {table} {chain}"), message => RuleIn(message, family, table, chain));
        return rules.Count;
    }

    /// <summary>A NEWRULE message of the dump, when it is a rule of that family, table and chain (else null).</summary>
    private static string? RuleIn(NetlinkMessage message, byte family, string table, string chain)
    {
        if (message.Type != NfTablesMessages.MessageType(LinuxUapi.NfTables.NFT_MSG_NEWRULE) || message.Payload.Length < 4 || message.Payload[0] != family) return null;
        var attributes = message.Attributes(4);
        return attributes.TryFind(LinuxUapi.NfTables.NFTA_RULE_TABLE, out var t) && t.String == table &&
               attributes.TryFind(LinuxUapi.NfTables.NFTA_RULE_CHAIN, out var c) && c.String == chain ? chain : null;
    }

    public void Dispose() => _socket.Dispose();
}
