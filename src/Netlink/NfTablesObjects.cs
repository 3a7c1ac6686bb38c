using System.Text;
using static ProxyPlanes.Netlink.LinuxUapi.NfTables;

namespace ProxyPlanes.Netlink;

/// <summary>
/// One expression of an nf_tables rule: its name (<c>payload</c>, <c>cmp</c>, …) and its
/// NFTA_EXPR_DATA attributes, encoded as the kernel reads them (registers and numbers big-endian,
/// data in NFTA_DATA_VALUE). The factories write the attributes libnftnl writes for the same
/// expression; <see cref="ToString"/> reads like <c>nft --debug=netlink</c>.
/// </summary>
public sealed class NfTablesExpression
{
    // The text is made only when asked for (errors, tests): a cold sync compiles ~200,000 expressions.
    private readonly Func<string> _text;

    private NfTablesExpression(string name, byte[] data, Func<string> text)
    {
        Name = name;
        Data = data;
        _text = text;
    }

    public string Name { get; }

    /// <summary>The attributes inside NFTA_EXPR_DATA.</summary>
    public byte[] Data { get; }

    public override string ToString() => $"[ {_text()} ]";

    /// <summary>The register a value at byte <paramref name="offset"/> of a concatenation starts in, numbered as nft numbers it (a 128-bit register when aligned to 16 bytes, else a 32-bit one).</summary>
    public static uint Register(int offset) => offset % 16 == 0 ? NFT_REG_1 + (uint)(offset / 16) : NFT_REG32_00 + (uint)(offset / 4);

    public static NfTablesExpression Payload(uint payloadBase, int offset, int length, uint destination) =>
        Make("payload", () => $"payload load {length}b @ {(payloadBase == NFT_PAYLOAD_NETWORK_HEADER ? "network" : "transport")} header + {offset} => reg {destination}", (ref NetlinkWriter w) =>
        {
            w.PutBigEndianU32(NFTA_PAYLOAD_DREG, destination);
            w.PutBigEndianU32(NFTA_PAYLOAD_BASE, payloadBase);
            w.PutBigEndianU32(NFTA_PAYLOAD_OFFSET, (uint)offset);
            w.PutBigEndianU32(NFTA_PAYLOAD_LEN, (uint)length);
        });

    public static NfTablesExpression Meta(uint key, uint destination) =>
        Make("meta", () => $"meta load {key} => reg {destination}", (ref NetlinkWriter w) =>
        {
            w.PutBigEndianU32(NFTA_META_DREG, destination);
            w.PutBigEndianU32(NFTA_META_KEY, key);
        });

    public static NfTablesExpression MetaSet(uint key, uint source) =>
        Make("meta", () => $"meta set {key} with reg {source}", (ref NetlinkWriter w) =>
        {
            w.PutBigEndianU32(NFTA_META_KEY, key);
            w.PutBigEndianU32(NFTA_META_SREG, source);
        });

    public static NfTablesExpression Ct(uint key, uint destination) =>
        Make("ct", () => $"ct load {key} => reg {destination}", (ref NetlinkWriter w) =>
        {
            w.PutBigEndianU32(NFTA_CT_DREG, destination);
            w.PutBigEndianU32(NFTA_CT_KEY, key);
        });

    public static NfTablesExpression Cmp(uint op, uint source, byte[] data) =>
        Make("cmp", () => $"cmp {(op == NFT_CMP_EQ ? "eq" : "neq")} reg {source} 0x{Convert.ToHexString(data)}", (ref NetlinkWriter w) =>
        {
            w.PutBigEndianU32(NFTA_CMP_SREG, source);
            w.PutBigEndianU32(NFTA_CMP_OP, op);
            PutValue(ref w, NFTA_CMP_DATA, data);
        });

    /// <summary>reg = (reg &amp; mask) ^ xor, over the mask's length.</summary>
    public static NfTablesExpression Bitwise(uint register, byte[] mask, byte[] xor) =>
        Make("bitwise", () => $"bitwise reg {register} = ( reg {register} & 0x{Convert.ToHexString(mask)} ) ^ 0x{Convert.ToHexString(xor)}", (ref NetlinkWriter w) =>
        {
            w.PutBigEndianU32(NFTA_BITWISE_SREG, register);
            w.PutBigEndianU32(NFTA_BITWISE_DREG, register);
            w.PutBigEndianU32(NFTA_BITWISE_LEN, (uint)mask.Length);
            PutValue(ref w, NFTA_BITWISE_MASK, mask);
            PutValue(ref w, NFTA_BITWISE_XOR, xor);
        });

    /// <summary>A set lookup (a match), or a map lookup whose value goes to <paramref name="destination"/> (the verdict register for a verdict map).</summary>
    public static NfTablesExpression Lookup(string set, uint source, uint? destination = null, bool invert = false) =>
        Make("lookup", () => $"lookup reg {source} set {set}{(destination is { } d ? $" dreg {d}" : "")}{(invert ? " 0x1" : "")}", (ref NetlinkWriter w) =>
        {
            w.PutString(NFTA_LOOKUP_SET, set);
            w.PutBigEndianU32(NFTA_LOOKUP_SREG, source);
            if (destination is { } d) w.PutBigEndianU32(NFTA_LOOKUP_DREG, d);
            if (invert) w.PutBigEndianU32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
        });

    public static NfTablesExpression Immediate(uint destination, byte[] data) =>
        Make("immediate", () => $"immediate reg {destination} 0x{Convert.ToHexString(data)}", (ref NetlinkWriter w) =>
        {
            w.PutBigEndianU32(NFTA_IMMEDIATE_DREG, destination);
            PutValue(ref w, NFTA_IMMEDIATE_DATA, data);
        });

    /// <summary>The rule's verdict: <c>accept</c>, <c>drop</c>, <c>return</c>, <c>jump C</c>, <c>goto C</c>.</summary>
    public static NfTablesExpression Verdict(NfTablesVerdict verdict) =>
        Make("immediate", () => $"immediate reg 0 {verdict}", (ref NetlinkWriter w) =>
        {
            w.PutBigEndianU32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
            NfTablesMessages.WriteVerdict(ref w, NFTA_IMMEDIATE_DATA, verdict);
        });

    public static NfTablesExpression Fib(uint flags, uint result, uint destination) =>
        Make("fib", () => $"fib flags {flags} result {result} => reg {destination}", (ref NetlinkWriter w) =>
        {
            w.PutBigEndianU32(NFTA_FIB_DREG, destination);
            w.PutBigEndianU32(NFTA_FIB_RESULT, result);
            w.PutBigEndianU32(NFTA_FIB_FLAGS, flags);
        });

    public static NfTablesExpression RandomNumber(uint modulus, uint offset, uint destination) =>
        Make("numgen", () => $"numgen reg {destination} = random mod {modulus}{(offset == 0 ? "" : $" offset {offset}")}", (ref NetlinkWriter w) =>
        {
            w.PutBigEndianU32(NFTA_NG_DREG, destination);
            w.PutBigEndianU32(NFTA_NG_MODULUS, modulus);
            w.PutBigEndianU32(NFTA_NG_TYPE, NFT_NG_RANDOM);
            if (offset != 0) w.PutBigEndianU32(NFTA_NG_OFFSET, offset);
        });

    /// <summary>Host to network byte order of <paramref name="length"/> bytes in units of <paramref name="size"/>, in place.</summary>
    public static NfTablesExpression HostToNetwork(uint register, uint length, uint size) =>
        Make("byteorder", () => $"byteorder reg {register} = hton(reg {register}, {size}, {length})", (ref NetlinkWriter w) =>
        {
            w.PutBigEndianU32(NFTA_BYTEORDER_SREG, register);
            w.PutBigEndianU32(NFTA_BYTEORDER_DREG, register);
            w.PutBigEndianU32(NFTA_BYTEORDER_OP, NFT_BYTEORDER_HTON);
            w.PutBigEndianU32(NFTA_BYTEORDER_LEN, length);
            w.PutBigEndianU32(NFTA_BYTEORDER_SIZE, size);
        });

    public static NfTablesExpression DestinationNat(byte family, uint addressRegister, uint portRegister, uint flags) =>
        Make("nat", () => $"nat dnat {NfTablesMessages.FamilyKeyword(family)} addr_min reg {addressRegister} proto_min reg {portRegister}{(flags == 0 ? "" : $" flags 0x{flags:x}")}", (ref NetlinkWriter w) =>
        {
            w.PutBigEndianU32(NFTA_NAT_TYPE, NFT_NAT_DNAT);
            w.PutBigEndianU32(NFTA_NAT_FAMILY, family);
            w.PutBigEndianU32(NFTA_NAT_REG_ADDR_MIN, addressRegister);
            w.PutBigEndianU32(NFTA_NAT_REG_PROTO_MIN, portRegister);
            if (flags != 0) w.PutBigEndianU32(NFTA_NAT_FLAGS, flags);
        });

    public static NfTablesExpression Masquerade(uint flags) =>
        Make("masq", () => flags == 0 ? "masq" : $"masq flags 0x{flags:x}", (ref NetlinkWriter w) =>
        {
            if (flags != 0) w.PutBigEndianU32(NFTA_MASQ_FLAGS, flags);
        });

    public static NfTablesExpression Reject(uint type, byte code) =>
        Make("reject", () => $"reject type {type} code {code}", (ref NetlinkWriter w) =>
        {
            w.PutBigEndianU32(NFTA_REJECT_TYPE, type);
            w.PutU8(NFTA_REJECT_ICMP_CODE, code);
        });

    /// <summary><c>update @set { key }</c>: adds the key in <paramref name="source"/> to a dynamic set, or refreshes its timeout.</summary>
    public static NfTablesExpression DynamicSetUpdate(string set, uint source) =>
        Make("dynset", () => $"dynset update reg_key {source} set {set}", (ref NetlinkWriter w) =>
        {
            w.PutString(NFTA_DYNSET_SET_NAME, set);
            w.PutBigEndianU32(NFTA_DYNSET_OP, NFT_DYNSET_OP_UPDATE);
            w.PutBigEndianU32(NFTA_DYNSET_SREG_KEY, source);
        });

    private static void PutValue(ref NetlinkWriter writer, ushort type, byte[] data)
    {
        if (data.Length is 0 or > NFT_DATA_VALUE_MAXLEN) throw new ArgumentException($"{data.Length} bytes of expression data");
        var nested = writer.BeginNested(type);
        writer.PutBytes(NFTA_DATA_VALUE, data);
        writer.EndNested(nested);
    }

    private static NfTablesExpression Make(string name, Func<string> text, NetlinkRequestWriter write)
    {
        Span<byte> buffer = stackalloc byte[1024];
        var writer = new NetlinkWriter(buffer);
        write(ref writer);
        return new NfTablesExpression(name, writer.Written.ToArray(), text);
    }
}

/// <summary>
/// libnftnl's user data: TLVs of a u8 type, a u8 length and the value, which the kernel stores
/// without reading and nft reads back (comments, a set's key byte order, its <c>typeof</c>).
/// </summary>
public sealed class NfTablesUserData
{
    private readonly List<byte> _bytes = [];

    public int Length => _bytes.Count;

    public NfTablesUserData Add(byte type, ReadOnlySpan<byte> value)
    {
        if (value.Length > byte.MaxValue) throw new ArgumentException($"user data item {type} of {value.Length} bytes");
        _bytes.Add(type);
        _bytes.Add((byte)value.Length);
        foreach (var b in value) _bytes.Add(b);
        return this;
    }

    /// <summary>A u32 in host byte order, as libnftnl writes them.</summary>
    public NfTablesUserData AddU32(byte type, uint value)
    {
        Span<byte> bytes = stackalloc byte[4];
        BitConverter.TryWriteBytes(bytes, value);
        return Add(type, bytes);
    }

    /// <summary>A string with its NUL (a comment: nft takes at most 128 bytes).</summary>
    public NfTablesUserData AddString(byte type, string value)
    {
        if (value.Contains('\0')) throw new ArgumentException("a NUL in user data text");
        return Add(type, Encoding.UTF8.GetBytes(value + "\0"));
    }

    public NfTablesUserData AddNested(byte type, NfTablesUserData nested) => Add(type, nested.ToArray());

    public byte[] ToArray() => [.. _bytes];

    /// <summary>A table's, chain's or rule's comment: TLV type 0 (NFTNL_UDATA_*_COMMENT).</summary>
    public static byte[] Comment(string comment) => new NfTablesUserData().AddString(0, comment).ToArray();
}

/// <summary>A base chain's hook: its type (<c>filter</c>, <c>nat</c>), hook number (NF_INET_*) and priority; its policy is accept.</summary>
public sealed record NfTablesHook(string Type, uint HookNumber, int Priority);

/// <summary>
/// A set or map as NFT_MSG_NEWSET defines it: NFT_SET_* flags, the key's datatype (concatenations
/// as nft combines them: 6 bits per type) and padded length, for a map the data's type and length
/// (NFT_DATA_VERDICT, length 0, for verdicts), a default timeout, and nft's user data (key byte order,
/// <c>typeof</c>, comment) so that <c>nft list</c> prints the set as it was written.
/// </summary>
public sealed record NfTablesSetDefinition(string Name, uint Flags, uint KeyType, int KeyLength)
{
    public uint? DataType { get; init; }
    public int DataLength { get; init; }
    public TimeSpan? Timeout { get; init; }
    public byte[]? UserData { get; init; }
}

/// <summary>
/// NFT_MSG_NEWTABLE / NEWCHAIN / DELCHAIN / NEWRULE / DELRULE / NEWSET / DELSET (and a set's
/// flush: DELSETELEM without elements) as requests of a batch, named by the nft command they carry
/// out, so a refusal names the object (<c>nftables add rule ip proxyplanes services …</c>). Adds
/// carry NLM_F_CREATE, as <c>nft add</c> (an object already there is no error); rules are appended.
/// </summary>
public static class NfTablesObjects
{
    private static string Prefix(byte family, string table) => $"{NfTablesMessages.FamilyKeyword(family)} {table}";

    public static NetlinkRequest Table(byte family, string table, string? comment)
    {
        NfTablesMessages.ValidateName(table, "table");
        return new NetlinkRequest(NfTablesMessages.MessageType(NFT_MSG_NEWTABLE), LinuxUapi.Netlink.NLM_F_CREATE, (ref NetlinkWriter w) =>
        {
            w.WriteNetfilterHeader(family, 0);
            w.PutString(NFTA_TABLE_NAME, table);
            w.PutBigEndianU32(NFTA_TABLE_FLAGS, 0);
            if (comment is not null) w.PutBytes(NFTA_TABLE_USERDATA, NfTablesUserData.Comment(comment));
        }, $"nftables add table {Prefix(family, table)}");
    }

    public static NetlinkRequest Chain(byte family, string table, string chain, NfTablesHook? hook, string? comment)
    {
        NfTablesMessages.ValidateName(table, "table");
        NfTablesMessages.ValidateName(chain, "chain");
        return new NetlinkRequest(NfTablesMessages.MessageType(NFT_MSG_NEWCHAIN), LinuxUapi.Netlink.NLM_F_CREATE, (ref NetlinkWriter w) =>
        {
            w.WriteNetfilterHeader(family, 0);
            w.PutString(NFTA_CHAIN_TABLE, table);
            w.PutString(NFTA_CHAIN_NAME, chain);
            if (hook is not null)
            {
                w.PutString(NFTA_CHAIN_TYPE, hook.Type);
                w.PutBigEndianU32(NFTA_CHAIN_POLICY, LinuxUapi.Netfilter.NF_ACCEPT);
                var nested = w.BeginNested(NFTA_CHAIN_HOOK);
                w.PutBigEndianU32(NFTA_HOOK_HOOKNUM, hook.HookNumber);
                w.PutBigEndianU32(NFTA_HOOK_PRIORITY, unchecked((uint)hook.Priority));
                w.EndNested(nested);
            }
            if (comment is not null) w.PutBytes(NFTA_CHAIN_USERDATA, NfTablesUserData.Comment(comment));
        }, () => $"nftables add chain {Prefix(family, table)} {chain}");
    }

    public static NetlinkRequest DeleteChain(byte family, string table, string chain) =>
        Named(NFT_MSG_DELCHAIN, family, table, NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, chain, $"nftables delete chain {Prefix(family, table)} {chain}");

    /// <summary>Deletes every rule of a chain (DELRULE naming only the chain), as <c>nft flush chain</c>.</summary>
    public static NetlinkRequest FlushChain(byte family, string table, string chain) =>
        Named(NFT_MSG_DELRULE, family, table, NFTA_RULE_TABLE, NFTA_RULE_CHAIN, chain, $"nftables flush chain {Prefix(family, table)} {chain}");

    /// <summary>A rule appended to <paramref name="chain"/>; <paramref name="text"/> names it in errors.</summary>
    public static NetlinkRequest Rule(byte family, string table, string chain, IReadOnlyList<NfTablesExpression> expressions, string? comment, string text)
    {
        NfTablesMessages.ValidateName(table, "table");
        NfTablesMessages.ValidateName(chain, "chain");
        if (expressions.Count == 0) throw new ArgumentException($"rule in {chain} without expressions");
        return new NetlinkRequest(NfTablesMessages.MessageType(NFT_MSG_NEWRULE), (ushort)(LinuxUapi.Netlink.NLM_F_CREATE | LinuxUapi.Netlink.NLM_F_APPEND), (ref NetlinkWriter w) =>
        {
            w.WriteNetfilterHeader(family, 0);
            w.PutString(NFTA_RULE_TABLE, table);
            w.PutString(NFTA_RULE_CHAIN, chain);
            var list = w.BeginNested(NFTA_RULE_EXPRESSIONS);
            foreach (var expression in expressions)
            {
                var item = w.BeginNested(NFTA_LIST_ELEM);
                w.PutString(NFTA_EXPR_NAME, expression.Name);
                w.PutBytes(NFTA_EXPR_DATA | LinuxUapi.Netlink.NLA_F_NESTED, expression.Data);
                w.EndNested(item);
            }
            w.EndNested(list);
            if (comment is not null) w.PutBytes(NFTA_RULE_USERDATA, NfTablesUserData.Comment(comment));
        }, () => $"nftables add rule {Prefix(family, table)} {chain} {text}");
    }

    /// <summary>A set or map; <paramref name="id"/> numbers it within the batch (NFTA_SET_ID), as nft does.</summary>
    public static NetlinkRequest Set(byte family, string table, NfTablesSetDefinition set, uint id, string text)
    {
        NfTablesMessages.ValidateName(table, "table");
        NfTablesMessages.ValidateName(set.Name, "set");
        return new NetlinkRequest(NfTablesMessages.MessageType(NFT_MSG_NEWSET), LinuxUapi.Netlink.NLM_F_CREATE, (ref NetlinkWriter w) =>
        {
            w.WriteNetfilterHeader(family, 0);
            w.PutString(NFTA_SET_TABLE, table);
            w.PutString(NFTA_SET_NAME, set.Name);
            w.PutBigEndianU32(NFTA_SET_FLAGS, set.Flags);
            w.PutBigEndianU32(NFTA_SET_KEY_TYPE, set.KeyType);
            w.PutBigEndianU32(NFTA_SET_KEY_LEN, (uint)set.KeyLength);
            if (set.DataType is { } dataType)
            {
                w.PutBigEndianU32(NFTA_SET_DATA_TYPE, dataType);
                w.PutBigEndianU32(NFTA_SET_DATA_LEN, (uint)set.DataLength);
            }
            w.PutBigEndianU32(NFTA_SET_ID, id);
            if (set.Timeout is { } timeout) w.PutBigEndianU64(NFTA_SET_TIMEOUT, (ulong)timeout.TotalMilliseconds);
            if (set.UserData is { } userData) w.PutBytes(NFTA_SET_USERDATA, userData);
        }, $"nftables add {text}");
    }

    /// <summary>Deletes a set or map (<paramref name="kind"/> names it in errors).</summary>
    public static NetlinkRequest DeleteSet(byte family, string table, string set, string kind = "set") =>
        Named(NFT_MSG_DELSET, family, table, NFTA_SET_TABLE, NFTA_SET_NAME, set, $"nftables delete {kind} {Prefix(family, table)} {set}");

    /// <summary>Deletes every element of a set or map (DELSETELEM without elements), as <c>nft flush set</c>.</summary>
    public static NetlinkRequest FlushSet(byte family, string table, string set, string kind = "set") =>
        Named(NFT_MSG_DELSETELEM, family, table, NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, set, $"nftables flush {kind} {Prefix(family, table)} {set}");

    private static NetlinkRequest Named(ushort message, byte family, string table, ushort tableAttribute, ushort nameAttribute, string name, string operation)
    {
        NfTablesMessages.ValidateName(table, "table");
        NfTablesMessages.ValidateName(name, "object");
        return new NetlinkRequest(NfTablesMessages.MessageType(message), 0, (ref NetlinkWriter w) =>
        {
            w.WriteNetfilterHeader(family, 0);
            w.PutString(tableAttribute, table);
            w.PutString(nameAttribute, name);
        }, operation);
    }
}
