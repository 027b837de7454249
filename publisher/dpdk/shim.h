/* mdi's C shim over DPDK: DPDK's burst receive, mbuf accessors and errno are inline
 * functions or macros, which bindgen cannot bind; these small functions wrap them with
 * plain types. Everything else is called through the bindgen bindings. */
#ifndef MDI_DPDK_SHIM_H
#define MDI_DPDK_SHIM_H

#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;

/* rte_errno of the calling thread. */
int mdi_dpdk_errno(void);
/* rte_strerror. */
const char *mdi_dpdk_strerror(int error);
/* rte_eal_init. */
int mdi_dpdk_eal_init(int argc, char **argv);
/* rte_eal_cleanup. */
int mdi_dpdk_eal_cleanup(void);
/* Number of usable ports. */
uint16_t mdi_dpdk_port_count(void);
/* The port id of a device name (e.g. "net_pcap0"); negative on failure. */
int mdi_dpdk_port_by_name(const char *name, uint16_t *port);
/* A packet buffer pool of n mbufs on the caller's socket; NULL on failure (see errno). */
struct rte_mempool *mdi_dpdk_pool_create(const char *name, unsigned n, uint16_t data_room);
/* Frees a pool made by mdi_dpdk_pool_create. */
void mdi_dpdk_pool_free(struct rte_mempool *pool);
/* Configures port with one receive queue of rx_desc descriptors on pool (and one
 * transmit queue), asks for receive timestamps if the port offers them, promiscuous,
 * and starts it. 0 or a negative errno; *timestamps says whether frames may carry one
 * (each frame's flag says); the driver's name is copied to driver. */
int mdi_dpdk_port_start(uint16_t port, struct rte_mempool *pool, uint16_t rx_desc,
                        int *timestamps, char *driver, uint32_t driver_len);
/* Stops and closes a port. */
void mdi_dpdk_port_stop(uint16_t port);
/* rte_eth_rx_burst on queue 0. */
uint16_t mdi_dpdk_rx_burst(uint16_t port, struct rte_mbuf **mbufs, uint16_t n);
/* The frame in an mbuf (first segment) and its length. */
const uint8_t *mdi_dpdk_mbuf_data(const struct rte_mbuf *mbuf, uint32_t *len);
/* The frame's total length and the number of segments. */
uint32_t mdi_dpdk_mbuf_pkt_len(const struct rte_mbuf *mbuf, uint16_t *segments);
/* The receive timestamp the driver stamped (its units), 1 if there is one. */
int mdi_dpdk_mbuf_timestamp(const struct rte_mbuf *mbuf, uint64_t *timestamp);
/* rte_pktmbuf_free_bulk. */
void mdi_dpdk_free_bulk(struct rte_mbuf **mbufs, unsigned n);
/* Receive counters of a port: packets, missed (no descriptors), errors, no mbufs. */
int mdi_dpdk_port_stats(uint16_t port, uint64_t *packets, uint64_t *missed,
                        uint64_t *errors, uint64_t *no_mbuf);

#endif
