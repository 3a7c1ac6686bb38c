namespace ProxyPlanes.Netlink;

/// <summary>
/// The Linux kernel UAPI values this library uses, in one place, grouped by the header that
/// defines them (include/uapi/linux/*.h). Names are the kernel's, so a value can be looked up
/// with grep. <c>LinuxUapiTests</c> checks every one against the kernel headers with a C compiler.
/// </summary>
public static class LinuxUapi
{
    /// <summary>Address families and socket constants (sys/socket.h, asm-generic/socket.h).</summary>
    public static class Socket
    {
        public const int AF_UNSPEC = 0;
        public const int AF_INET = 2;
        public const int AF_INET6 = 10;
        public const int AF_NETLINK = 16;

        public const int SOCK_RAW = 3;
        public const int SOCK_CLOEXEC = 0x80000;

        public const int SOL_SOCKET = 1;
        public const int SO_SNDBUF = 7;
        public const int SO_RCVBUF = 8;
        public const int SO_RCVTIMEO = 20;
        public const int SO_SNDBUFFORCE = 32;
        public const int SO_RCVBUFFORCE = 33;

        public const int MSG_PEEK = 0x2;
        public const int MSG_TRUNC = 0x20;

        /// <summary>IP protocol numbers (netinet/in.h), as IPVS services carry them.</summary>
        public const int IPPROTO_TCP = 6;
        public const int IPPROTO_UDP = 17;
        public const int IPPROTO_SCTP = 132;
    }

    /// <summary>Error numbers (asm-generic/errno-base.h, asm-generic/errno.h).</summary>
    public static class Errno
    {
        public const int EPERM = 1;
        public const int ENOENT = 2;
        public const int ESRCH = 3;
        public const int EINTR = 4;
        public const int EIO = 5;
        public const int EBADF = 9;
        public const int EAGAIN = 11;
        public const int ENOMEM = 12;
        public const int EACCES = 13;
        public const int EBUSY = 16;
        public const int EEXIST = 17;
        public const int ENODEV = 19;
        public const int EINVAL = 22;
        public const int ENOSPC = 28;
        public const int EMLINK = 31;
        public const int ERANGE = 34;
        public const int EMSGSIZE = 90;
        public const int EPROTONOSUPPORT = 93;
        public const int EOPNOTSUPP = 95;
        public const int EAFNOSUPPORT = 97;
        public const int EADDRINUSE = 98;
        public const int EADDRNOTAVAIL = 99;
        public const int ENOBUFS = 105;
        public const int ELOOP = 40;
        public const int ETIMEDOUT = 110;
        public const int ESTALE = 116;
    }

    /// <summary>include/uapi/linux/netlink.h</summary>
    public static class Netlink
    {
        public const int NETLINK_ROUTE = 0;
        public const int NETLINK_SOCK_DIAG = 4;
        public const int NETLINK_NETFILTER = 12;
        public const int NETLINK_GENERIC = 16;

        public const int SOL_NETLINK = 270;
        public const int NETLINK_ADD_MEMBERSHIP = 1;
        public const int NETLINK_CAP_ACK = 10;
        public const int NETLINK_EXT_ACK = 11;
        public const int NETLINK_GET_STRICT_CHK = 12;

        public const ushort NLM_F_REQUEST = 0x01;
        public const ushort NLM_F_MULTI = 0x02;
        public const ushort NLM_F_ACK = 0x04;
        public const ushort NLM_F_ECHO = 0x08;
        public const ushort NLM_F_DUMP_INTR = 0x10;
        public const ushort NLM_F_DUMP_FILTERED = 0x20;

        // Modifiers to GET requests.
        public const ushort NLM_F_ROOT = 0x100;
        public const ushort NLM_F_MATCH = 0x200;
        public const ushort NLM_F_ATOMIC = 0x400;
        public const ushort NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH;

        // Modifiers to NEW requests.
        public const ushort NLM_F_REPLACE = 0x100;
        public const ushort NLM_F_EXCL = 0x200;
        public const ushort NLM_F_CREATE = 0x400;
        public const ushort NLM_F_APPEND = 0x800;

        // Flags of an ACK (NLMSG_ERROR) message.
        public const ushort NLM_F_CAPPED = 0x100;
        public const ushort NLM_F_ACK_TLVS = 0x200;

        public const ushort NLMSG_NOOP = 0x1;
        public const ushort NLMSG_ERROR = 0x2;
        public const ushort NLMSG_DONE = 0x3;
        public const ushort NLMSG_OVERRUN = 0x4;
        public const ushort NLMSG_MIN_TYPE = 0x10;

        public const int NLMSG_ALIGNTO = 4;
        /// <summary>sizeof(struct nlmsghdr): len u32, type u16, flags u16, seq u32, pid u32.</summary>
        public const int NLMSG_HDRLEN = 16;

        // enum nlmsgerr_attrs: the extended ACK's attributes.
        public const ushort NLMSGERR_ATTR_MSG = 1;
        public const ushort NLMSGERR_ATTR_OFFS = 2;
        public const ushort NLMSGERR_ATTR_COOKIE = 3;
        public const ushort NLMSGERR_ATTR_POLICY = 4;
        public const ushort NLMSGERR_ATTR_MISS_TYPE = 5;
        public const ushort NLMSGERR_ATTR_MISS_NEST = 6;

        public const int NLA_ALIGNTO = 4;
        /// <summary>sizeof(struct nlattr): len u16, type u16.</summary>
        public const int NLA_HDRLEN = 4;
        public const ushort NLA_F_NESTED = 1 << 15;
        public const ushort NLA_F_NET_BYTEORDER = 1 << 14;
        public const ushort NLA_TYPE_MASK = unchecked((ushort)~(NLA_F_NESTED | NLA_F_NET_BYTEORDER));
    }

    /// <summary>include/uapi/linux/genetlink.h</summary>
    public static class GenericNetlink
    {
        /// <summary>sizeof(struct genlmsghdr): cmd u8, version u8, reserved u16.</summary>
        public const int GENL_HDRLEN = 4;
        public const ushort GENL_ID_CTRL = Netlink.NLMSG_MIN_TYPE;

        public const byte CTRL_CMD_UNSPEC = 0;
        public const byte CTRL_CMD_NEWFAMILY = 1;
        public const byte CTRL_CMD_DELFAMILY = 2;
        public const byte CTRL_CMD_GETFAMILY = 3;

        public const ushort CTRL_ATTR_UNSPEC = 0;
        public const ushort CTRL_ATTR_FAMILY_ID = 1;
        public const ushort CTRL_ATTR_FAMILY_NAME = 2;
        public const ushort CTRL_ATTR_VERSION = 3;
        public const ushort CTRL_ATTR_HDRSIZE = 4;
        public const ushort CTRL_ATTR_MAXATTR = 5;
        public const ushort CTRL_ATTR_OPS = 6;
        public const ushort CTRL_ATTR_MCAST_GROUPS = 7;
    }

    /// <summary>include/uapi/linux/rtnetlink.h</summary>
    public static class Rtnetlink
    {
        public const ushort RTM_NEWLINK = 16;
        public const ushort RTM_DELLINK = 17;
        public const ushort RTM_GETLINK = 18;
        public const ushort RTM_SETLINK = 19;
        public const ushort RTM_NEWADDR = 20;
        public const ushort RTM_DELADDR = 21;
        public const ushort RTM_GETADDR = 22;

        /// <summary>sizeof(struct ifinfomsg): family u8, pad u8, type u16, index i32, flags u32, change u32.</summary>
        public const int IFINFOMSG_LEN = 16;
        /// <summary>sizeof(struct ifaddrmsg): family u8, prefixlen u8, flags u8, scope u8, index u32.</summary>
        public const int IFADDRMSG_LEN = 8;

        public const byte RT_SCOPE_UNIVERSE = 0;
        public const byte RT_SCOPE_SITE = 200;
        public const byte RT_SCOPE_LINK = 253;
        public const byte RT_SCOPE_HOST = 254;
        public const byte RT_SCOPE_NOWHERE = 255;
    }

    /// <summary>include/uapi/linux/if.h (net_device_flags)</summary>
    public static class Interface
    {
        public const uint IFF_UP = 0x1;
        public const uint IFF_LOOPBACK = 0x8;
        public const uint IFF_NOARP = 0x80;
        public const uint IFF_LOWER_UP = 0x10000;
    }

    /// <summary>include/uapi/linux/if_link.h</summary>
    public static class IfLink
    {
        public const ushort IFLA_UNSPEC = 0;
        public const ushort IFLA_ADDRESS = 1;
        public const ushort IFLA_BROADCAST = 2;
        public const ushort IFLA_IFNAME = 3;
        public const ushort IFLA_MTU = 4;
        public const ushort IFLA_LINK = 5;
        public const ushort IFLA_OPERSTATE = 16;
        public const ushort IFLA_LINKINFO = 18;

        public const ushort IFLA_INFO_UNSPEC = 0;
        public const ushort IFLA_INFO_KIND = 1;
        public const ushort IFLA_INFO_DATA = 2;
    }

    /// <summary>include/uapi/linux/if_addr.h</summary>
    public static class IfAddr
    {
        public const ushort IFA_UNSPEC = 0;
        public const ushort IFA_ADDRESS = 1;
        public const ushort IFA_LOCAL = 2;
        public const ushort IFA_LABEL = 3;
        public const ushort IFA_BROADCAST = 4;
        public const ushort IFA_ANYCAST = 5;
        public const ushort IFA_CACHEINFO = 6;
        public const ushort IFA_MULTICAST = 7;
        public const ushort IFA_FLAGS = 8;

        public const uint IFA_F_SECONDARY = 0x01;
        public const uint IFA_F_NODAD = 0x02;
        public const uint IFA_F_OPTIMISTIC = 0x04;
        public const uint IFA_F_DADFAILED = 0x08;
        public const uint IFA_F_HOMEADDRESS = 0x10;
        public const uint IFA_F_DEPRECATED = 0x20;
        public const uint IFA_F_TENTATIVE = 0x40;
        public const uint IFA_F_PERMANENT = 0x80;
        public const uint IFA_F_NOPREFIXROUTE = 0x200;
    }

    /// <summary>include/uapi/linux/sock_diag.h, include/uapi/linux/inet_diag.h, include/net/tcp_states.h</summary>
    public static class SockDiag
    {
        public const ushort SOCK_DIAG_BY_FAMILY = 20;
        public const ushort SOCK_DESTROY = 21;

        /// <summary>sizeof(struct inet_diag_sockid): sport, dport (be16), src[4], dst[4] (be32), if, cookie[2].</summary>
        public const int INET_DIAG_SOCKID_LEN = 48;
        /// <summary>sizeof(struct inet_diag_req_v2): family, protocol, ext, pad (u8), states (u32), the sockid.</summary>
        public const int INET_DIAG_REQ_V2_LEN = 56;
        /// <summary>sizeof(struct inet_diag_msg): family, state, timer, retrans (u8), the sockid, expires, rqueue, wqueue, uid, inode (u32).</summary>
        public const int INET_DIAG_MSG_LEN = 72;
        public const uint INET_DIAG_NOCOOKIE = ~0U;

        // include/net/tcp_states.h (glibc's netinet/tcp.h has the same enum): UDP uses ESTABLISHED for a connected socket.
        public const int TCP_ESTABLISHED = 1;
        public const int TCP_SYN_SENT = 2;
    }

    /// <summary>include/uapi/linux/ip_vs.h</summary>
    public static class IpVs
    {
        public const string IPVS_GENL_NAME = "IPVS";
        public const byte IPVS_GENL_VERSION = 0x1;

        public const uint IP_VS_SVC_F_PERSISTENT = 0x0001;
        public const uint IP_VS_SVC_F_HASHED = 0x0002;
        public const uint IP_VS_SVC_F_ONEPACKET = 0x0004;
        public const uint IP_VS_SVC_F_SCHED1 = 0x0008;
        public const uint IP_VS_SVC_F_SCHED2 = 0x0010;
        public const uint IP_VS_SVC_F_SCHED3 = 0x0020;

        public const uint IP_VS_CONN_F_FWD_MASK = 0x0007;
        public const uint IP_VS_CONN_F_MASQ = 0x0000;
        public const uint IP_VS_CONN_F_LOCALNODE = 0x0001;
        public const uint IP_VS_CONN_F_TUNNEL = 0x0002;
        public const uint IP_VS_CONN_F_DROUTE = 0x0003;
        public const uint IP_VS_CONN_F_BYPASS = 0x0004;

        public const int IP_VS_SCHEDNAME_MAXLEN = 16;

        public const byte IPVS_CMD_UNSPEC = 0;
        public const byte IPVS_CMD_NEW_SERVICE = 1;
        public const byte IPVS_CMD_SET_SERVICE = 2;
        public const byte IPVS_CMD_DEL_SERVICE = 3;
        public const byte IPVS_CMD_GET_SERVICE = 4;
        public const byte IPVS_CMD_NEW_DEST = 5;
        public const byte IPVS_CMD_SET_DEST = 6;
        public const byte IPVS_CMD_DEL_DEST = 7;
        public const byte IPVS_CMD_GET_DEST = 8;
        public const byte IPVS_CMD_NEW_DAEMON = 9;
        public const byte IPVS_CMD_DEL_DAEMON = 10;
        public const byte IPVS_CMD_GET_DAEMON = 11;
        public const byte IPVS_CMD_SET_CONFIG = 12;
        public const byte IPVS_CMD_GET_CONFIG = 13;
        public const byte IPVS_CMD_SET_INFO = 14;
        public const byte IPVS_CMD_GET_INFO = 15;
        public const byte IPVS_CMD_ZERO = 16;
        public const byte IPVS_CMD_FLUSH = 17;

        public const ushort IPVS_CMD_ATTR_UNSPEC = 0;
        public const ushort IPVS_CMD_ATTR_SERVICE = 1;
        public const ushort IPVS_CMD_ATTR_DEST = 2;
        public const ushort IPVS_CMD_ATTR_DAEMON = 3;
        public const ushort IPVS_CMD_ATTR_TIMEOUT_TCP = 4;
        public const ushort IPVS_CMD_ATTR_TIMEOUT_TCP_FIN = 5;
        public const ushort IPVS_CMD_ATTR_TIMEOUT_UDP = 6;

        public const ushort IPVS_SVC_ATTR_UNSPEC = 0;
        public const ushort IPVS_SVC_ATTR_AF = 1;
        public const ushort IPVS_SVC_ATTR_PROTOCOL = 2;
        public const ushort IPVS_SVC_ATTR_ADDR = 3;
        public const ushort IPVS_SVC_ATTR_PORT = 4;
        public const ushort IPVS_SVC_ATTR_FWMARK = 5;
        public const ushort IPVS_SVC_ATTR_SCHED_NAME = 6;
        public const ushort IPVS_SVC_ATTR_FLAGS = 7;
        public const ushort IPVS_SVC_ATTR_TIMEOUT = 8;
        public const ushort IPVS_SVC_ATTR_NETMASK = 9;
        public const ushort IPVS_SVC_ATTR_STATS = 10;
        public const ushort IPVS_SVC_ATTR_PE_NAME = 11;
        public const ushort IPVS_SVC_ATTR_STATS64 = 12;

        public const ushort IPVS_DEST_ATTR_UNSPEC = 0;
        public const ushort IPVS_DEST_ATTR_ADDR = 1;
        public const ushort IPVS_DEST_ATTR_PORT = 2;
        public const ushort IPVS_DEST_ATTR_FWD_METHOD = 3;
        public const ushort IPVS_DEST_ATTR_WEIGHT = 4;
        public const ushort IPVS_DEST_ATTR_U_THRESH = 5;
        public const ushort IPVS_DEST_ATTR_L_THRESH = 6;
        public const ushort IPVS_DEST_ATTR_ACTIVE_CONNS = 7;
        public const ushort IPVS_DEST_ATTR_INACT_CONNS = 8;
        public const ushort IPVS_DEST_ATTR_PERSIST_CONNS = 9;
        public const ushort IPVS_DEST_ATTR_STATS = 10;
        public const ushort IPVS_DEST_ATTR_ADDR_FAMILY = 11;
        public const ushort IPVS_DEST_ATTR_STATS64 = 12;
        public const ushort IPVS_DEST_ATTR_TUN_TYPE = 13;
        public const ushort IPVS_DEST_ATTR_TUN_PORT = 14;
        public const ushort IPVS_DEST_ATTR_TUN_FLAGS = 15;

        public const ushort IPVS_INFO_ATTR_UNSPEC = 0;
        public const ushort IPVS_INFO_ATTR_VERSION = 1;
        public const ushort IPVS_INFO_ATTR_CONN_TAB_SIZE = 2;
    }
    /// <summary>include/uapi/linux/netfilter.h</summary>
    public static class Netfilter
    {
        public const int NF_DROP = 0;
        public const int NF_ACCEPT = 1;

        public const byte NFPROTO_UNSPEC = 0;
        public const byte NFPROTO_INET = 1;
        public const byte NFPROTO_IPV4 = 2;
        public const byte NFPROTO_IPV6 = 10;

        // enum nf_inet_hooks
        public const uint NF_INET_PRE_ROUTING = 0;
        public const uint NF_INET_LOCAL_IN = 1;
        public const uint NF_INET_FORWARD = 2;
        public const uint NF_INET_LOCAL_OUT = 3;
        public const uint NF_INET_POST_ROUTING = 4;
    }

    /// <summary>include/uapi/linux/netfilter/nf_nat.h</summary>
    public static class NfNat
    {
        public const uint NF_NAT_RANGE_PROTO_SPECIFIED = 0x2;
        public const uint NF_NAT_RANGE_PROTO_RANDOM_FULLY = 0x10;
    }

    /// <summary>include/uapi/linux/netfilter/nfnetlink.h</summary>
    public static class Nfnetlink
    {
        public const byte NFNETLINK_V0 = 0;
        public const ushort NFNL_SUBSYS_NFTABLES = 10;
        public const ushort NFNL_MSG_BATCH_BEGIN = Netlink.NLMSG_MIN_TYPE;
        public const ushort NFNL_MSG_BATCH_END = Netlink.NLMSG_MIN_TYPE + 1;

        /// <summary>sizeof(struct nfgenmsg): nfgen_family u8, version u8, res_id be16.</summary>
        public const int NFGENMSG_LEN = 4;
    }

    /// <summary>include/uapi/linux/netfilter/nf_tables.h</summary>
    public static class NfTables
    {
        /// <summary>Longest table, chain or set name with its NUL.</summary>
        public const int NFT_NAME_MAXLEN = 256;
        public const int NFT_DATA_VALUE_MAXLEN = 64;

        // enum nft_verdicts (NF_DROP and NF_ACCEPT are netfilter.h's).
        public const int NFT_CONTINUE = -1;
        public const int NFT_BREAK = -2;
        public const int NFT_JUMP = -3;
        public const int NFT_GOTO = -4;
        public const int NFT_RETURN = -5;

        // enum nf_tables_msg_types: the message type is (NFNL_SUBSYS_NFTABLES << 8) | one of these.
        public const ushort NFT_MSG_NEWTABLE = 0;
        public const ushort NFT_MSG_NEWSET = 9;
        public const ushort NFT_MSG_GETSET = 10;
        public const ushort NFT_MSG_NEWSETELEM = 12;
        public const ushort NFT_MSG_GETSETELEM = 13;
        public const ushort NFT_MSG_DELSETELEM = 14;

        // enum nft_list_attributes
        public const ushort NFTA_LIST_ELEM = 1;

        // enum nft_set_elem_list_attributes
        public const ushort NFTA_SET_ELEM_LIST_TABLE = 1;
        public const ushort NFTA_SET_ELEM_LIST_SET = 2;
        public const ushort NFTA_SET_ELEM_LIST_ELEMENTS = 3;
        public const ushort NFTA_SET_ELEM_LIST_SET_ID = 4;

        // enum nft_set_elem_attributes
        public const ushort NFTA_SET_ELEM_KEY = 1;
        public const ushort NFTA_SET_ELEM_DATA = 2;
        public const ushort NFTA_SET_ELEM_FLAGS = 3;
        public const ushort NFTA_SET_ELEM_TIMEOUT = 4;
        public const ushort NFTA_SET_ELEM_EXPIRATION = 5;
        public const ushort NFTA_SET_ELEM_USERDATA = 6;
        public const ushort NFTA_SET_ELEM_KEY_END = 10;

        // enum nft_set_elem_flags
        public const uint NFT_SET_ELEM_INTERVAL_END = 0x1;

        // enum nft_data_attributes
        public const ushort NFTA_DATA_VALUE = 1;
        public const ushort NFTA_DATA_VERDICT = 2;

        // enum nft_verdict_attributes
        public const ushort NFTA_VERDICT_CODE = 1;
        public const ushort NFTA_VERDICT_CHAIN = 2;

        // Messages for whole objects (tables, chains, rules, sets).
        public const ushort NFT_MSG_DELTABLE = 2;
        public const ushort NFT_MSG_NEWCHAIN = 3;
        public const ushort NFT_MSG_DELCHAIN = 5;
        public const ushort NFT_MSG_NEWRULE = 6;
        public const ushort NFT_MSG_GETRULE = 7;
        public const ushort NFT_MSG_DELRULE = 8;
        public const ushort NFT_MSG_DELSET = 11;

        // enum nft_table_attributes
        public const ushort NFTA_TABLE_NAME = 1;
        public const ushort NFTA_TABLE_FLAGS = 2;
        public const ushort NFTA_TABLE_USERDATA = 6;

        // enum nft_chain_attributes, enum nft_hook_attributes
        public const ushort NFTA_CHAIN_TABLE = 1;
        public const ushort NFTA_CHAIN_NAME = 3;
        public const ushort NFTA_CHAIN_HOOK = 4;
        public const ushort NFTA_CHAIN_POLICY = 5;
        public const ushort NFTA_CHAIN_TYPE = 7;
        public const ushort NFTA_CHAIN_USERDATA = 12;
        public const ushort NFTA_HOOK_HOOKNUM = 1;
        public const ushort NFTA_HOOK_PRIORITY = 2;

        // enum nft_rule_attributes, enum nft_expr_attributes
        public const ushort NFTA_RULE_TABLE = 1;
        public const ushort NFTA_RULE_CHAIN = 2;
        public const ushort NFTA_RULE_EXPRESSIONS = 4;
        public const ushort NFTA_RULE_USERDATA = 7;
        public const ushort NFTA_EXPR_NAME = 1;
        public const ushort NFTA_EXPR_DATA = 2;

        // enum nft_set_attributes, enum nft_set_flags
        public const ushort NFTA_SET_TABLE = 1;
        public const ushort NFTA_SET_NAME = 2;
        public const ushort NFTA_SET_FLAGS = 3;
        public const ushort NFTA_SET_KEY_TYPE = 4;
        public const ushort NFTA_SET_KEY_LEN = 5;
        public const ushort NFTA_SET_DATA_TYPE = 6;
        public const ushort NFTA_SET_DATA_LEN = 7;
        public const ushort NFTA_SET_ID = 10;
        public const ushort NFTA_SET_TIMEOUT = 11;
        public const ushort NFTA_SET_USERDATA = 13;
        public const uint NFT_SET_INTERVAL = 0x4;
        public const uint NFT_SET_MAP = 0x8;
        public const uint NFT_SET_TIMEOUT = 0x10;
        public const uint NFT_SET_EVAL = 0x20;
        public const uint NFT_DATA_VERDICT = 0xffffff00;

        // enum nft_registers
        public const uint NFT_REG_VERDICT = 0;
        public const uint NFT_REG_1 = 1;
        public const uint NFT_REG32_00 = 8;

        // Expressions: enum nft_immediate_attributes, nft_cmp_attributes / nft_cmp_ops, nft_bitwise_attributes,
        // nft_payload_attributes / nft_payload_bases, nft_meta_attributes / nft_meta_keys, nft_ct_attributes / nft_ct_keys,
        // nft_lookup_attributes / nft_lookup_flags, nft_fib_attributes / nft_fib_result / nft_fib_flags,
        // nft_ng_attributes / nft_ng_types, nft_byteorder_attributes / nft_byteorder_ops, nft_nat_attributes / nft_nat_types,
        // nft_masq_attributes, nft_reject_attributes / nft_reject_types, nft_dynset_attributes / nft_dynset_ops.
        public const ushort NFTA_IMMEDIATE_DREG = 1;
        public const ushort NFTA_IMMEDIATE_DATA = 2;
        public const ushort NFTA_CMP_SREG = 1;
        public const ushort NFTA_CMP_OP = 2;
        public const ushort NFTA_CMP_DATA = 3;
        public const uint NFT_CMP_EQ = 0;
        public const uint NFT_CMP_NEQ = 1;
        public const ushort NFTA_BITWISE_SREG = 1;
        public const ushort NFTA_BITWISE_DREG = 2;
        public const ushort NFTA_BITWISE_LEN = 3;
        public const ushort NFTA_BITWISE_MASK = 4;
        public const ushort NFTA_BITWISE_XOR = 5;
        public const ushort NFTA_PAYLOAD_DREG = 1;
        public const ushort NFTA_PAYLOAD_BASE = 2;
        public const ushort NFTA_PAYLOAD_OFFSET = 3;
        public const ushort NFTA_PAYLOAD_LEN = 4;
        public const uint NFT_PAYLOAD_NETWORK_HEADER = 1;
        public const uint NFT_PAYLOAD_TRANSPORT_HEADER = 2;
        public const ushort NFTA_META_DREG = 1;
        public const ushort NFTA_META_KEY = 2;
        public const ushort NFTA_META_SREG = 3;
        public const uint NFT_META_MARK = 3;
        public const uint NFT_META_IIFNAME = 6;
        public const uint NFT_META_L4PROTO = 16;
        public const ushort NFTA_CT_DREG = 1;
        public const ushort NFTA_CT_KEY = 2;
        public const uint NFT_CT_STATE = 0;
        public const uint NFT_CT_STATUS = 2;
        public const ushort NFTA_LOOKUP_SET = 1;
        public const ushort NFTA_LOOKUP_SREG = 2;
        public const ushort NFTA_LOOKUP_DREG = 3;
        public const ushort NFTA_LOOKUP_FLAGS = 5;
        public const uint NFT_LOOKUP_F_INV = 1;
        public const ushort NFTA_FIB_DREG = 1;
        public const ushort NFTA_FIB_RESULT = 2;
        public const ushort NFTA_FIB_FLAGS = 3;
        public const uint NFT_FIB_RESULT_ADDRTYPE = 3;
        public const uint NFTA_FIB_F_SADDR = 1;
        public const uint NFTA_FIB_F_DADDR = 2;
        public const ushort NFTA_NG_DREG = 1;
        public const ushort NFTA_NG_MODULUS = 2;
        public const ushort NFTA_NG_TYPE = 3;
        public const ushort NFTA_NG_OFFSET = 4;
        public const uint NFT_NG_RANDOM = 1;
        public const ushort NFTA_BYTEORDER_SREG = 1;
        public const ushort NFTA_BYTEORDER_DREG = 2;
        public const ushort NFTA_BYTEORDER_OP = 3;
        public const ushort NFTA_BYTEORDER_LEN = 4;
        public const ushort NFTA_BYTEORDER_SIZE = 5;
        public const uint NFT_BYTEORDER_HTON = 1;
        public const ushort NFTA_NAT_TYPE = 1;
        public const ushort NFTA_NAT_FAMILY = 2;
        public const ushort NFTA_NAT_REG_ADDR_MIN = 3;
        public const ushort NFTA_NAT_REG_PROTO_MIN = 5;
        public const ushort NFTA_NAT_FLAGS = 7;
        public const uint NFT_NAT_DNAT = 1;
        public const ushort NFTA_MASQ_FLAGS = 1;
        public const ushort NFTA_REJECT_TYPE = 1;
        public const ushort NFTA_REJECT_ICMP_CODE = 2;
        public const uint NFT_REJECT_ICMP_UNREACH = 0;
        public const ushort NFTA_DYNSET_SET_NAME = 1;
        public const ushort NFTA_DYNSET_OP = 3;
        public const ushort NFTA_DYNSET_SREG_KEY = 4;
        public const uint NFT_DYNSET_OP_UPDATE = 1;
    }
}
