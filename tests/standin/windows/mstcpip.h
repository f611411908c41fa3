#ifndef KA_STANDIN_MSTCPIP_H
#define KA_STANDIN_MSTCPIP_H
struct tcp_keepalive {
    u_long onoff;
    u_long keepalivetime;
    u_long keepaliveinterval;
};
#define SIO_KEEPALIVE_VALS _WSAIOW(IOC_VENDOR, 4)
#endif
