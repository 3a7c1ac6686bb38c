using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using ProxyPlanes.Model;
using ProxyPlanes.Netlink;
using static ProxyPlanes.Netlink.LinuxUapi.NfTables;

namespace ProxyPlanes.Backends.Nftables;

/// <summary>
/// The netlink form of the planner's objects: tables, chains, set and map definitions, and rules,
/// whose nft text is compiled here into the expressions nft 1.0.6 sends for it (checked against
/// <c>nft --debug=netlink</c>). Only the rule language the planner writes is known: matches on
/// <c>ip</c>/<c>ip6</c> addresses and prefixes, <c>tcp</c>/<c>udp</c>/<c>sctp dport</c>,
/// <c>meta l4proto</c>, <c>meta mark &amp; M == V</c>, <c>iifname</c>, <c>ct state</c>/<c>status</c>,
/// <c>fib saddr|daddr type local</c>, <c>numgen random mod N == K</c>, set lookups (also negated and
/// on concatenations) and verdict maps; statements <c>meta mark set meta mark | X</c> (or <c>^</c>),
/// <c>dnat to ADDR:PORT</c>, <c>dnat ip to numgen … map @M</c>, <c>masquerade [fully-random]</c>,
/// <c>reject</c>, <c>update @S { ip saddr }</c>; and the verdicts. Anything else returns null with the
/// reason, and the transaction goes through nft.
/// </summary>
internal static class NftNetlinkEncoding
{
    // nft's datatype ids (datatype.h); a concatenation is the ids 6 bits apart.
    private static readonly Dictionary<string, (uint Id, int Length, uint ByteOrder)> DataTypes = new(StringComparer.Ordinal)
    {
        ["integer"] = (4, 4, 1),
        ["ipv4_addr"] = (7, 4, 2),
        ["ipv6_addr"] = (8, 16, 2),
        ["inet_proto"] = (12, 1, 0),
        ["inet_service"] = (13, 2, 2),
        ["mark"] = (19, 4, 1),
    };

    // nft's set user data (NFTNL_UDATA_SET_*) and typeof expression ids and protocol descriptions.
    private const byte KeyByteOrder = 0, DataByteOrder = 1, KeyTypeof = 3, DataTypeof = 4, DataInterval = 6, SetComment = 7;
    private const uint ConcatExpression = 13, PayloadExpression = 7, NumgenExpression = 23;

    private static readonly Dictionary<string, (uint Description, uint Field)> TypeofPayloads = new(StringComparer.Ordinal)
    {
        ["ip daddr"] = (12, 12), ["ip saddr"] = (12, 11), ["ip6 daddr"] = (13, 9), ["ip6 saddr"] = (13, 8),
        ["tcp dport"] = (8, 2), ["udp dport"] = (6, 2), ["sctp dport"] = (10, 2),
    };

    public static byte FamilyNumber(IpFamily family) => family == IpFamily.IPv4 ? LinuxUapi.Netfilter.NFPROTO_IPV4 : LinuxUapi.Netfilter.NFPROTO_IPV6;

    public static NfTablesHook? Hook(NftBaseChain? chain)
    {
        if (chain is null) return null;
        var hook = chain.Hook switch
        {
            "prerouting" => LinuxUapi.Netfilter.NF_INET_PRE_ROUTING,
            "input" => LinuxUapi.Netfilter.NF_INET_LOCAL_IN,
            "forward" => LinuxUapi.Netfilter.NF_INET_FORWARD,
            "output" => LinuxUapi.Netfilter.NF_INET_LOCAL_OUT,
            _ => LinuxUapi.Netfilter.NF_INET_POST_ROUTING,
        };
        return new NfTablesHook(chain.Type, hook, chain.Priority);
    }

    /// <summary>A set's definition, or null (and why) when one of its types or flags is not known here.</summary>
    public static NfTablesSetDefinition? Set(NftSet set, out string? reason)
    {
        if (!TryKey(set.Type, out var keyType, out var keyLength, out reason)) return null;
        if (!TryFlags(set.Flags, out var flags, out reason)) return null;
        if (set.TimeoutSeconds is not null) flags |= NFT_SET_TIMEOUT;
        var userData = new NfTablesUserData();
        AddKeyUserData(userData, set.Type);
        if (set.Comment is { } comment) userData.AddString(SetComment, comment);
        return new NfTablesSetDefinition(set.Name, flags, keyType, keyLength)
        {
            Timeout = set.TimeoutSeconds is { } seconds ? TimeSpan.FromSeconds(seconds) : null,
            UserData = userData.ToArray(),
        };
    }

    /// <summary>A map's definition (a verdict map, or a data map such as <c>typeof numgen … : ip daddr . tcp dport</c>), or null and why.</summary>
    public static NfTablesSetDefinition? Map(NftMap map, out string? reason)
    {
        if (!TryKey(map.Type, out var keyType, out var keyLength, out reason)) return null;
        if (!TryFlags(map.Flags, out var flags, out reason)) return null;
        flags |= NFT_SET_MAP;
        uint dataType;
        int dataLength;
        if (map.ValueType == "verdict") (dataType, dataLength) = (NFT_DATA_VERDICT, 0);
        else if (!TryKey(new EquatableArray<string>(map.ValueType.Split(" . ", StringSplitOptions.TrimEntries)), out dataType, out dataLength, out reason)) return null;
        var userData = new NfTablesUserData();
        if (map.KeyTypeof is { } keyTypeof)
        {
            if (TypeofUserData(keyTypeof) is not { } keyExpression || TypeofUserData(map.ValueTypeof!) is not { } valueExpression)
            {
                reason = $"map {map.Name}: typeof {keyTypeof} : {map.ValueTypeof}";
                return null;
            }
            userData.AddU32(KeyByteOrder, map.Type.Count == 1 ? DataTypes[map.Type[0]].ByteOrder : 0);
            userData.AddU32(DataByteOrder, 0);
            userData.AddNested(KeyTypeof, keyExpression);
            userData.AddNested(DataTypeof, valueExpression);
        }
        else
        {
            userData.AddU32(KeyByteOrder, map.Type.Count == 1 ? DataTypes[map.Type[0]].ByteOrder : 0);
            userData.AddU32(DataByteOrder, 0);
            if (map.Type.Count > 1) userData.AddNested(KeyTypeof, EmptyConcatenation());
        }
        userData.AddU32(DataInterval, 0);
        if (map.Comment is { } comment) userData.AddString(SetComment, comment);
        return new NfTablesSetDefinition(map.Name, flags, keyType, keyLength) { DataType = dataType, DataLength = dataLength, UserData = userData.ToArray() };
    }

    private static void AddKeyUserData(NfTablesUserData userData, EquatableArray<string> type)
    {
        if (type.Count == 1) userData.AddU32(KeyByteOrder, DataTypes[type[0]].ByteOrder);
        else
        {
            userData.AddU32(KeyByteOrder, 0);
            userData.AddNested(KeyTypeof, EmptyConcatenation());
        }
    }

    // A `type a . b` concatenation: nft records only that the key is a concatenation.
    private static NfTablesUserData EmptyConcatenation() => new NfTablesUserData().AddU32(0, ConcatExpression).Add(1, []);

    /// <summary>nft's user data for a typeof expression: <c>numgen random mod N</c>, or a concatenation of payload fields.</summary>
    private static NfTablesUserData? TypeofUserData(string text)
    {
        var words = text.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (words is ["numgen", "random", "mod", var modulus] && uint.TryParse(modulus, NumberStyles.None, CultureInfo.InvariantCulture, out var mod))
            return new NfTablesUserData().AddU32(0, NumgenExpression).AddNested(1, new NfTablesUserData().AddU32(0, NFT_NG_RANDOM).AddU32(1, mod).AddU32(2, 0));
        var fields = text.Split(" . ", StringSplitOptions.TrimEntries);
        var payloads = new List<NfTablesUserData>();
        foreach (var field in fields)
        {
            if (!TypeofPayloads.TryGetValue(field, out var payload)) return null;
            payloads.Add(new NfTablesUserData().AddU32(0, PayloadExpression).AddNested(1, new NfTablesUserData().AddU32(0, payload.Description).AddU32(1, payload.Field)));
        }
        if (payloads.Count == 1) return payloads[0];
        var concatenation = new NfTablesUserData();
        for (var i = 0; i < payloads.Count; i++) concatenation.AddNested((byte)i, payloads[i]);
        return new NfTablesUserData().AddU32(0, ConcatExpression).AddNested(1, concatenation);
    }

    private static bool TryKey(EquatableArray<string> types, out uint id, out int length, out string? reason)
    {
        (id, length, reason) = (0, 0, null);
        if (types.Count is 0 or > 5)
        {
            reason = $"a key of {types.Count} types";
            return false;
        }
        foreach (var name in types)
        {
            if (!DataTypes.TryGetValue(name, out var type))
            {
                reason = $"the type {name}";
                return false;
            }
            id = (id << 6) | type.Id;
            length += types.Count == 1 ? type.Length : NetlinkWriter.NetlinkAlign(type.Length);
        }
        return true;
    }

    private static bool TryFlags(EquatableArray<string> words, out uint flags, out string? reason)
    {
        (flags, reason) = (0, null);
        foreach (var word in words)
        {
            switch (word)
            {
                case "interval": flags |= NFT_SET_INTERVAL; break;
                case "timeout": flags |= NFT_SET_TIMEOUT; break;
                case "dynamic": flags |= NFT_SET_EVAL; break;
                default:
                    reason = $"the set flag {word}";
                    return false;
            }
        }
        return true;
    }

    /// <summary>The expressions of a rule, or null and the reason when its text uses something not compiled here.</summary>
    public static List<NfTablesExpression>? Rule(IpFamily family, string text, out string? reason)
    {
        try
        {
            var expressions = new RuleCompiler(family, text).Compile();
            reason = null;
            return expressions;
        }
        catch (FormatException e)
        {
            reason = $"rule '{text}': {e.Message}";
            return null;
        }
    }

    /// <summary>
    /// Most of a rule's expressions are the same in every service port's rules: loading the protocol or
    /// the destination port, matching <c>tcp</c> or a port number, the cluster CIDR, <c>jump
    /// mark-for-masquerade</c>, the slot map's lookup, the DNAT (at 10,000 services, 20,000 rules make about
    /// 160,000 expressions and only ~2 per rule differ: the cluster IP and the pool's offset). Those are made
    /// once and shared (an expression is immutable); what names one port or endpoint (its address, its
    /// pool's offset, a chain or set whose name holds the port's <c>namespace/name/…</c>) is made for each
    /// rule. The cache holds at most <see cref="SharedExpressionsMax"/> expressions; past that, every
    /// expression is made again, as before.
    /// </summary>
    internal static class SharedExpressions
    {
        internal const int SharedExpressionsMax = 4096;
        private static readonly System.Collections.Concurrent.ConcurrentDictionary<Key, NfTablesExpression> Cache = new();
        private static int _count;

        /// <summary>What makes an expression: its kind, up to four numbers, two byte strings of up to 8 bytes (length in the low bits of <see cref="Lengths"/>) and a name.</summary>
        internal readonly record struct Key(byte Kind, uint A, uint B, uint C, uint D, ulong Data, ulong Data2, int Lengths, string? Name);

        /// <summary>How many expressions are cached (tests).</summary>
        internal static int Count => Volatile.Read(ref _count);

        internal static NfTablesExpression Get(in Key key, Func<Key, NfTablesExpression> make)
        {
            if (Cache.TryGetValue(key, out var shared)) return shared;
            var made = make(key);
            if (Volatile.Read(ref _count) >= SharedExpressionsMax) return made;
            if (Cache.TryAdd(key, made)) Interlocked.Increment(ref _count);
            return made;
        }

        /// <summary>Up to 8 bytes as a number (with <see cref="Unpack"/>), or null when longer.</summary>
        internal static ulong? Pack(byte[] data)
        {
            if (data.Length > 8) return null;
            ulong value = 0;
            foreach (var b in data) value = (value << 8) | b;
            return value;
        }

        internal static byte[] Unpack(ulong value, int length)
        {
            var data = new byte[length];
            for (var i = length - 1; i >= 0; i--, value >>= 8) data[i] = (byte)value;
            return data;
        }

        /// <summary>A chain, set or map name shared by every port (the fixed chains, <c>endpoint-slots-…</c>), not one port's (<c>service-HASH-ns/name/…</c>).</summary>
        internal static bool IsSharedName(string name) => !name.Contains('/', StringComparison.Ordinal);
    }

    /// <summary>One pass over the rule's words; every match loads into register 1 (a concatenation from there on) and compares.</summary>
    private sealed class RuleCompiler(IpFamily family, string text)
    {
        private readonly string[] _words = text.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        private readonly List<NfTablesExpression> _expressions = [];
        private int _at;

        private bool IPv6 => family == IpFamily.IPv6;
        private string IpKeyword => IPv6 ? "ip6" : "ip";

        public List<NfTablesExpression> Compile()
        {
            var ended = false;
            while (_at < _words.Length)
            {
                if (ended) throw new FormatException($"'{_words[_at]}' after the rule's verdict");
                var word = Next();
                switch (word)
                {
                    case "ct":
                        CtMatch();
                        break;
                    case "meta" when Peek() == "mark":
                        _at++;
                        Mark();
                        break;
                    case "meta" when Peek() == "l4proto" && Peek(1) == ".":
                    case "ip" or "ip6" when Peek(1) == ".":
                    case "th":
                        _at--;
                        Concatenation();
                        break;
                    case "meta" when Peek() == "l4proto":
                        _at++;
                        _expressions.Add(Meta(NFT_META_L4PROTO, NFT_REG_1));
                        _expressions.Add(Cmp(NFT_CMP_EQ, NFT_REG_1, [Protocol(Next())]));
                        break;
                    case "fib":
                        Fib();
                        break;
                    case "ip" or "ip6":
                        AddressMatch(word);
                        break;
                    case "tcp" or "udp" or "sctp":
                        PortMatch(word);
                        break;
                    case "iifname":
                        InterfaceMatch();
                        break;
                    case "numgen":
                    {
                        var (modulus, offset) = RandomNumber();
                        Expect("==");
                        _expressions.Add(RandomNumber(modulus, offset, NFT_REG_1));
                        _expressions.Add(Cmp(NFT_CMP_EQ, NFT_REG_1, BitConverter.GetBytes(Number(Next()))));
                        break;
                    }
                    case "jump" or "goto":
                    {
                        var chain = Next();
                        _expressions.Add(word == "jump" ? Verdict(NfTablesVerdict.Jump(chain), chain, 3) : Verdict(NfTablesVerdict.Goto(chain), chain, 4));
                        ended = true;
                        break;
                    }
                    case "return" or "accept" or "drop":
                        _expressions.Add(word switch { "return" => Verdict(NfTablesVerdict.Return, null, 0), "accept" => Verdict(NfTablesVerdict.Accept, null, 1), _ => Verdict(NfTablesVerdict.Drop, null, 2) });
                        ended = true;
                        break;
                    case "reject":
                        // nft's default: ICMP port unreachable (code 3), ICMPv6 port unreachable (code 4).
                        _expressions.Add(Reject(NFT_REJECT_ICMP_UNREACH, IPv6 ? (byte)4 : (byte)3));
                        ended = true;
                        break;
                    case "masquerade":
                        var fullyRandom = Peek() == "fully-random";
                        if (fullyRandom) _at++;
                        _expressions.Add(Masquerade(fullyRandom ? LinuxUapi.NfNat.NF_NAT_RANGE_PROTO_RANDOM_FULLY : 0));
                        ended = true;
                        break;
                    case "dnat":
                        DestinationNat();
                        ended = true;
                        break;
                    case "update":
                        Update();
                        break;
                    default:
                        throw new FormatException($"'{word}' is not compiled to netlink here");
                }
            }
            return _expressions;
        }

        private string Next() => _at < _words.Length ? _words[_at++] : throw new FormatException("ends too early");

        private string? Peek(int ahead = 0) => _at + ahead < _words.Length ? _words[_at + ahead] : null;

        private const byte KindMeta = 1, KindMetaSet = 2, KindCt = 3, KindPayload = 4, KindCmp = 5, KindBitwise = 6, KindLookup = 7, KindVerdict = 8,
            KindFib = 9, KindRandom = 10, KindHostToNetwork = 11, KindNat = 12, KindMasquerade = 13, KindReject = 14;

        private static NfTablesExpression Meta(uint key, uint register) =>
            SharedExpressions.Get(new(KindMeta, key, register, 0, 0, 0, 0, 0, null), static k => NfTablesExpression.Meta(k.A, k.B));

        private static NfTablesExpression MetaSet(uint key, uint register) =>
            SharedExpressions.Get(new(KindMetaSet, key, register, 0, 0, 0, 0, 0, null), static k => NfTablesExpression.MetaSet(k.A, k.B));

        private static NfTablesExpression Ct(uint key, uint register) =>
            SharedExpressions.Get(new(KindCt, key, register, 0, 0, 0, 0, 0, null), static k => NfTablesExpression.Ct(k.A, k.B));

        private static NfTablesExpression Payload(uint payloadBase, int offset, int length, uint register) =>
            SharedExpressions.Get(new(KindPayload, payloadBase, (uint)offset, (uint)length, register, 0, 0, 0, null), static k => NfTablesExpression.Payload(k.A, (int)k.B, (int)k.C, k.D));

        /// <summary>A comparison, shared unless <paramref name="perRule"/> (a port's own address) or longer than 8 bytes.</summary>
        private static NfTablesExpression Cmp(uint op, uint register, byte[] data, bool perRule = false) =>
            !perRule && SharedExpressions.Pack(data) is { } packed
                ? SharedExpressions.Get(new(KindCmp, op, register, 0, 0, packed, 0, data.Length, null), static k => NfTablesExpression.Cmp(k.A, k.B, SharedExpressions.Unpack(k.Data, k.Lengths)))
                : NfTablesExpression.Cmp(op, register, data);

        private static NfTablesExpression Bitwise(uint register, byte[] mask, byte[] xor) =>
            mask.Length == xor.Length && SharedExpressions.Pack(mask) is { } m && SharedExpressions.Pack(xor) is { } x
                ? SharedExpressions.Get(new(KindBitwise, register, 0, 0, 0, m, x, mask.Length, null), static k => NfTablesExpression.Bitwise(k.A, SharedExpressions.Unpack(k.Data, k.Lengths), SharedExpressions.Unpack(k.Data2, k.Lengths)))
                : NfTablesExpression.Bitwise(register, mask, xor);

        private static NfTablesExpression Lookup(string set, uint register, uint? destination = null, bool invert = false) =>
            SharedExpressions.IsSharedName(set)
                ? SharedExpressions.Get(new(KindLookup, register, destination ?? uint.MaxValue, invert ? 1u : 0u, 0, 0, 0, 0, set),
                    static k => NfTablesExpression.Lookup(k.Name!, k.A, k.B == uint.MaxValue ? null : k.B, k.C == 1))
                : NfTablesExpression.Lookup(set, register, destination, invert);

        private static NfTablesExpression Verdict(NfTablesVerdict verdict, string? chain, uint code) =>
            chain is null || SharedExpressions.IsSharedName(chain)
                ? SharedExpressions.Get(new(KindVerdict, code, 0, 0, 0, 0, 0, 0, chain), static k => NfTablesExpression.Verdict(k.Name is null
                    ? k.A switch { 0 => NfTablesVerdict.Return, 1 => NfTablesVerdict.Accept, _ => NfTablesVerdict.Drop }
                    : k.A == 3 ? NfTablesVerdict.Jump(k.Name) : NfTablesVerdict.Goto(k.Name)))
                : NfTablesExpression.Verdict(verdict);

        private static NfTablesExpression Fib(uint flags, uint result, uint register) =>
            SharedExpressions.Get(new(KindFib, flags, result, register, 0, 0, 0, 0, null), static k => NfTablesExpression.Fib(k.A, k.B, k.C));

        /// <summary><c>numgen random mod N</c>, shared without an offset (a pool's offset is its own).</summary>
        private static NfTablesExpression RandomNumber(uint modulus, uint offset, uint register) =>
            offset == 0
                ? SharedExpressions.Get(new(KindRandom, modulus, register, 0, 0, 0, 0, 0, null), static k => NfTablesExpression.RandomNumber(k.A, 0, k.B))
                : NfTablesExpression.RandomNumber(modulus, offset, register);

        private static NfTablesExpression HostToNetwork(uint register, uint length, uint size) =>
            SharedExpressions.Get(new(KindHostToNetwork, register, length, size, 0, 0, 0, 0, null), static k => NfTablesExpression.HostToNetwork(k.A, k.B, k.C));

        private static NfTablesExpression DestinationNat(byte family, uint addressRegister, uint portRegister, uint flags) =>
            SharedExpressions.Get(new(KindNat, family, addressRegister, portRegister, flags, 0, 0, 0, null), static k => NfTablesExpression.DestinationNat((byte)k.A, k.B, k.C, k.D));

        private static NfTablesExpression Masquerade(uint flags) =>
            SharedExpressions.Get(new(KindMasquerade, flags, 0, 0, 0, 0, 0, 0, null), static k => NfTablesExpression.Masquerade(k.A));

        private static NfTablesExpression Reject(uint type, byte code) =>
            SharedExpressions.Get(new(KindReject, type, code, 0, 0, 0, 0, 0, null), static k => NfTablesExpression.Reject(k.A, (byte)k.B));

        private void Expect(string word)
        {
            if (Next() != word) throw new FormatException($"'{word}' expected");
        }

        private void CtMatch()
        {
            var (key, bits) = Next() switch
            {
                "state" => (NFT_CT_STATE, Next() switch { "invalid" => 1u, "established" => 2u, "related" => 4u, "new" => 8u, var s => throw new FormatException($"ct state {s}") }),
                "status" => (NFT_CT_STATUS, Next() switch { "snat" => 0x10u, "dnat" => 0x20u, var s => throw new FormatException($"ct status {s}") }),
                var k => throw new FormatException($"ct {k}"),
            };
            _expressions.Add(Ct(key, NFT_REG_1));
            _expressions.Add(Bitwise(NFT_REG_1, BitConverter.GetBytes(bits), new byte[4]));
            _expressions.Add(Cmp(NFT_CMP_NEQ, NFT_REG_1, new byte[4]));
        }

        // `meta mark & M == V` or `meta mark set meta mark | X` / `^ X`.
        private void Mark()
        {
            _expressions.Add(Meta(NFT_META_MARK, NFT_REG_1));
            if (Peek() == "&")
            {
                _at++;
                var mask = Number(Next());
                Expect("==");
                var value = Number(Next());
                _expressions.Add(Bitwise(NFT_REG_1, BitConverter.GetBytes(mask), new byte[4]));
                _expressions.Add(Cmp(NFT_CMP_EQ, NFT_REG_1, BitConverter.GetBytes(value)));
                return;
            }
            Expect("set");
            Expect("meta");
            Expect("mark");
            var op = Next();
            var operand = Number(Next());
            var (andMask, xor) = op switch
            {
                "|" => (~operand, operand),
                "^" => (uint.MaxValue, operand),
                _ => throw new FormatException($"meta mark set … {op}"),
            };
            _expressions.Add(Bitwise(NFT_REG_1, BitConverter.GetBytes(andMask), BitConverter.GetBytes(xor)));
            _expressions.Add(MetaSet(NFT_META_MARK, NFT_REG_1));
        }

        private void Fib()
        {
            var flags = Next() switch { "saddr" => NFTA_FIB_F_SADDR, "daddr" => NFTA_FIB_F_DADDR, var f => throw new FormatException($"fib {f}") };
            Expect("type");
            Expect("local");
            _expressions.Add(Fib(flags, NFT_FIB_RESULT_ADDRTYPE, NFT_REG_1));
            _expressions.Add(Cmp(NFT_CMP_EQ, NFT_REG_1, BitConverter.GetBytes(2u))); // RTN_LOCAL
        }

        private (int Offset, int Length) AddressField(string protocol)
        {
            if (protocol != IpKeyword) throw new FormatException($"{protocol} in an {IpKeyword} table");
            return (Next(), IPv6) switch
            {
                ("saddr", false) => (12, 4),
                ("daddr", false) => (16, 4),
                ("saddr", true) => (8, 16),
                ("daddr", true) => (24, 16),
                (var f, _) => throw new FormatException($"{protocol} {f}"),
            };
        }

        // `ip saddr [!=] ADDRESS[/LENGTH]` or `ip saddr [!=] @set`.
        private void AddressMatch(string protocol)
        {
            var (offset, length) = AddressField(protocol);
            var op = NFT_CMP_EQ;
            if (Peek() == "!=")
            {
                _at++;
                op = NFT_CMP_NEQ;
            }
            var value = Next();
            if (value.StartsWith('@'))
            {
                _expressions.Add(Payload(NFT_PAYLOAD_NETWORK_HEADER, offset, length, NFT_REG_1));
                _expressions.Add(Lookup(value[1..], NFT_REG_1, invert: op == NFT_CMP_NEQ));
                return;
            }
            var slash = value.IndexOf('/');
            if (!IPAddress.TryParse(slash < 0 ? value : value[..slash], out var address) || address.AddressFamily != (IPv6 ? AddressFamily.InterNetworkV6 : AddressFamily.InterNetwork))
                throw new FormatException($"'{value}' is not an {IpKeyword} address");
            var bytes = address.GetAddressBytes();
            var bits = slash < 0 ? length * 8 : int.Parse(value[(slash + 1)..], NumberStyles.None, CultureInfo.InvariantCulture);
            if (bits > length * 8) throw new FormatException($"prefix {value}");
            if (bits % 8 == 0)
            {
                // nft loads only the prefix's bytes when it ends on a byte.
                _expressions.Add(Payload(NFT_PAYLOAD_NETWORK_HEADER, offset, bits / 8, NFT_REG_1));
                // A whole address (a port's cluster IP) is that port's own; a prefix (the cluster CIDR) is everyone's.
                _expressions.Add(Cmp(op, NFT_REG_1, bytes[..(bits / 8)], perRule: bits == length * 8));
                return;
            }
            var mask = new byte[length];
            for (var i = 0; i < bits; i++) mask[i / 8] |= (byte)(0x80 >> (i % 8));
            for (var i = 0; i < length; i++) bytes[i] &= mask[i];
            _expressions.Add(Payload(NFT_PAYLOAD_NETWORK_HEADER, offset, length, NFT_REG_1));
            _expressions.Add(Bitwise(NFT_REG_1, mask, new byte[length]));
            _expressions.Add(Cmp(op, NFT_REG_1, bytes));
        }

        // `tcp dport N` or `tcp dport @set`: nft first matches the protocol (its dependency).
        private void PortMatch(string protocol)
        {
            Expect("dport");
            _expressions.Add(Meta(NFT_META_L4PROTO, NFT_REG_1));
            _expressions.Add(Cmp(NFT_CMP_EQ, NFT_REG_1, [Protocol(protocol)]));
            _expressions.Add(Payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG_1));
            var value = Next();
            if (value.StartsWith('@')) _expressions.Add(Lookup(value[1..], NFT_REG_1));
            else _expressions.Add(Cmp(NFT_CMP_EQ, NFT_REG_1, Port(value)));
        }

        // `iifname [!=] "name"` (all 16 bytes) or `"prefix*"` (the prefix's bytes only).
        private void InterfaceMatch()
        {
            var op = NFT_CMP_EQ;
            if (Peek() == "!=")
            {
                _at++;
                op = NFT_CMP_NEQ;
            }
            var quoted = Next();
            if (quoted.Length < 3 || quoted[0] != '"' || quoted[^1] != '"') throw new FormatException($"iifname {quoted}");
            var name = quoted[1..^1];
            var wildcard = name.EndsWith('*');
            if (wildcard) name = name[..^1];
            var bytes = Encoding.ASCII.GetBytes(name);
            if (bytes.Length is 0 or > 15 || name.Contains('*') || name.Contains('\\')) throw new FormatException($"iifname {quoted}");
            var data = wildcard ? bytes : new byte[16];
            if (!wildcard) bytes.CopyTo(data, 0);
            _expressions.Add(Meta(NFT_META_IIFNAME, NFT_REG_1));
            _expressions.Add(Cmp(op, NFT_REG_1, data));
        }

        // `ip daddr . meta l4proto . th dport vmap @map` or `ip saddr . ip daddr @set`: each field in the next registers.
        private void Concatenation()
        {
            var offset = 0;
            while (true)
            {
                var register = NfTablesExpression.Register(offset);
                var word = Next();
                int length;
                switch (word)
                {
                    case "ip" or "ip6":
                        (var at, length) = AddressField(word);
                        _expressions.Add(Payload(NFT_PAYLOAD_NETWORK_HEADER, at, length, register));
                        break;
                    case "meta":
                        Expect("l4proto");
                        _expressions.Add(Meta(NFT_META_L4PROTO, register));
                        length = 1;
                        break;
                    case "th":
                        Expect("dport");
                        _expressions.Add(Payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, register));
                        length = 2;
                        break;
                    default:
                        throw new FormatException($"'{word}' in a concatenation");
                }
                offset += NetlinkWriter.NetlinkAlign(length);
                if (Peek() != ".") break;
                _at++;
            }
            var next = Next();
            if (next == "vmap")
            {
                var map = Next();
                if (!map.StartsWith('@')) throw new FormatException("vmap without a named map");
                _expressions.Add(Lookup(map[1..], NFT_REG_1, NFT_REG_VERDICT));
            }
            else if (next.StartsWith('@')) _expressions.Add(Lookup(next[1..], NFT_REG_1));
            else throw new FormatException($"'{next}' after a concatenation");
        }

        private (uint Modulus, uint Offset) RandomNumber()
        {
            Expect("random");
            Expect("mod");
            var modulus = Number(Next());
            uint offset = 0;
            if (Peek() == "offset")
            {
                _at++;
                offset = Number(Next());
            }
            return (modulus, offset);
        }

        // `dnat to ADDRESS:PORT` / `dnat to [ADDRESS]:PORT`, or `dnat ip to numgen random mod N offset O map @M`.
        private void DestinationNat()
        {
            var family = IPv6 ? LinuxUapi.Netfilter.NFPROTO_IPV6 : LinuxUapi.Netfilter.NFPROTO_IPV4;
            if (Peek() == IpKeyword)
            {
                _at++;
                Expect("to");
                Expect("numgen");
                var (modulus, offset) = RandomNumber();
                Expect("map");
                var map = Next();
                if (!map.StartsWith('@')) throw new FormatException("dnat map without a named map");
                // The interval map holds its integer keys big-endian: nft turns numgen's result around first.
                _expressions.Add(RandomNumber(modulus, offset, NFT_REG_1));
                _expressions.Add(HostToNetwork(NFT_REG_1, 4, 4));
                _expressions.Add(Lookup(map[1..], NFT_REG_1, NFT_REG_1));
                _expressions.Add(DestinationNat(family, NFT_REG_1, NfTablesExpression.Register(IPv6 ? 16 : 4), 0));
                return;
            }
            Expect("to");
            var target = Next();
            var colon = target.LastIndexOf(':');
            if (colon < 0) throw new FormatException($"dnat to {target} without a port");
            var host = target[..colon];
            if (IPv6)
            {
                if (!host.StartsWith('[') || !host.EndsWith(']')) throw new FormatException($"dnat to {target}");
                host = host[1..^1];
            }
            if (!IPAddress.TryParse(host, out var address) || address.AddressFamily != (IPv6 ? AddressFamily.InterNetworkV6 : AddressFamily.InterNetwork))
                throw new FormatException($"dnat to {target}");
            _expressions.Add(NfTablesExpression.Immediate(NFT_REG_1, address.GetAddressBytes()));
            _expressions.Add(NfTablesExpression.Immediate(NFT_REG_1 + 1, Port(target[(colon + 1)..])));
            _expressions.Add(DestinationNat(family, NFT_REG_1, NFT_REG_1 + 1, LinuxUapi.NfNat.NF_NAT_RANGE_PROTO_SPECIFIED));
        }

        // `update @set { ip saddr }`.
        private void Update()
        {
            var set = Next();
            if (!set.StartsWith('@')) throw new FormatException("update without a named set");
            Expect("{");
            var (offset, length) = AddressField(Next());
            Expect("}");
            _expressions.Add(Payload(NFT_PAYLOAD_NETWORK_HEADER, offset, length, NFT_REG_1));
            _expressions.Add(NfTablesExpression.DynamicSetUpdate(set[1..], NFT_REG_1));
        }

        private static byte Protocol(string name) => name switch
        {
            "tcp" => 6,
            "udp" => 17,
            "sctp" => 132,
            _ => throw new FormatException($"protocol {name}"),
        };

        private static byte[] Port(string text) =>
            ushort.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var port) ? [(byte)(port >> 8), (byte)port] : throw new FormatException($"port {text}");

        private static uint Number(string text) =>
            (text.StartsWith("0x", StringComparison.Ordinal)
                ? uint.TryParse(text.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var value)
                : uint.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out value))
                ? value
                : throw new FormatException($"'{text}' is not a number");
    }
}
